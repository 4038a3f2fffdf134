"""The native libraries' start-up noise, off: one filter on stderr that every CLI starts
(errors.cli_main). KERASRNN_VERBOSE=1 leaves stderr as it is."""
from __future__ import annotations

import os
import sys

# Start-up and progress chatter of the native libraries (TensorFlow, XLA, TFLite, MediaPipe), which
# their C++ writes straight to fd 2, some of it before any setting is read (absl's pre-init line) or
# with no setting at all (TFLite's INFO lines, the quantizer's printf): measured on tensorflow-cpu
# 2.21, 2 lines per TensorFlow training run, 5-6 per check_parity, ~30 per export. Only these lines
# are dropped: errors (E/F lines but the one below), tracebacks and our own messages pass.
NATIVE_NOISE = "|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"WARNING: Logging before InitGoogle\(\) is written to STDERR",
    r"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] ",  # absl / glog INFO and WARNING lines
    r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.",
    r"INFO: Created TensorFlow Lite .*delegate for CPU\.",
    r"INFO: Initialized TensorFlow Lite runtime\.",
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+",
    # tf.data under TensorFlow 2.21 logs this at ERROR level on every map; it is harmless.
    r"E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool",
    # TensorFlow's oneDNN on a CPU without AVX-512, at the first comparison op (the linear path's
    # Equal): an E line that only says it uses Eigen's kernel instead
    r"E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms with AVX-512\. "
    r"Falling back to the default Eigen-based implementation if present\.",
])
# The filter is a child process, not a thread: lines written just before a crash still come out.
_FILTER = ("import re, sys\n"
           "noise = re.compile(sys.argv[1].encode())\n"
           "out = sys.stdout.buffer\n"
           "for line in sys.stdin.buffer:\n"
           "    if not noise.match(line):\n"
           "        out.write(line)\n"
           "        out.flush()\n")
_filtering = False


def quiet_native_logs() -> None:
    """Drop the native libraries' start-up noise (NATIVE_NOISE) from this process's stderr, unless
    KERASRNN_VERBOSE=1. Called once by every CLI (errors.cli_main) before anything loads them."""
    global _filtering
    if _filtering or os.environ.get("KERASRNN_VERBOSE", "") not in ("", "0") or os.name != "posix":
        return
    import atexit
    import subprocess

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # less to filter; the filter catches the rest
    try:
        sys.stderr.flush()
        # new session: Ctrl-C (sent to the terminal's process group) must not stop the filter first
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, NATIVE_NOISE], stdin=subprocess.PIPE,
                                stdout=2, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return  # no filter: the noise shows, nothing else changes
    original = os.dup(2)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()
    _filtering = True

    def restore() -> None:
        # Put stderr back and let the filter finish, so that its last lines come before the prompt.
        sys.stderr.flush()
        os.dup2(original, 2)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child process of ours still holds the pipe
            pass

    atexit.register(restore)
