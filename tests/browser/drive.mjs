// Drive Debian's chromium headless with puppeteer-core (no browser download).
//   node drive.mjs job   <page-url> <job.json> <out.json>   runs window.runJob(job) on the harness page
//   node drive.mjs page  <page-url> <texts.json> <out.json>  types each text into the shipped web page
//                                                            and reads the label and bars it shows
// CHROMIUM names the browser (default /usr/bin/chromium). Page errors and failed requests are
// reported in the output, so a test can tell a broken page from a wrong answer.
import { readFileSync, writeFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const [mode, url, inputPath, outPath] = process.argv.slice(2);
const input = JSON.parse(readFileSync(inputPath, "utf8"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
});
// errors: uncaught page exceptions and failed local requests (a missing WASM or model file);
// console: what the page logged (MediaPipe logs INFO lines at error level), for diagnosis only.
const errors = [], offsite = [], consoleLines = [];
const local = (u) => /^https?:\/\/127\.0\.0\.1[:/]/.test(u) || u.startsWith("data:");
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("request", (r) => { if (!local(r.url())) offsite.push(r.url()); });
  page.on("requestfailed", (r) => { if (local(r.url())) errors.push(`${r.url()}: ${r.failure()?.errorText}`); });
  page.on("response", (r) => {
    if (local(r.url()) && r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${r.url()}: HTTP ${r.status()}`);
  });
  page.setDefaultTimeout(240000);
  await page.goto(url, { waitUntil: "load" });
  let result;
  if (mode === "job") {
    await page.waitForFunction(() => window.harnessReady === true);
    result = await page.evaluate((job) => window.runJob(job), input);
  } else if (mode === "page") {
    await page.waitForSelector("#status[data-state=ready], #status[data-state=error]");
    const state = await page.$eval("#status", (el) => [el.dataset.state, el.textContent]);
    if (state[0] !== "ready") throw new Error(`the page did not load: ${state[1]}`);
    result = { shown: [] };
    for (const text of input.texts) {
      await page.$eval("#text", (el) => { el.value = ""; });
      await page.type("#text", text);
      await page.click("#classify");
      await page.waitForFunction((t) => document.querySelector("#result").dataset.text === t, {}, text);
      result.shown.push(await page.$eval("#result", (el) => ({
        label: el.querySelector("[data-top]").dataset.top,
        bars: [...el.querySelectorAll("[data-label]")].map((b) => ({ label: b.dataset.label, score: Number(b.dataset.score) })),
      })));
    }
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  writeFileSync(outPath, JSON.stringify({ ...result, errors, offsite, console: consoleLines }));
} catch (e) {
  writeFileSync(outPath, JSON.stringify({ failed: String(e && e.stack || e), errors, offsite, console: consoleLines }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
