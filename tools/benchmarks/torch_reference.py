"""The PyTorch reference of the benchmarks: nn.RNN trained as our model is (same sizes, same
pooling, same batches and epochs), padding skipped by packed sequences."""
from __future__ import annotations

import time

import numpy as np

from kerasrnn import pooling


def _poolings(torch, directions: int) -> dict:
    """One implementation per pooling (kerasrnn.pooling.POOLINGS): (packed outputs, last states,
    lengths) -> one vector per text. Max and mean cover the real steps only, as the Keras model's
    masked pooling does."""
    nn = torch.nn

    def last(seq, h, lengths):  # the last layer's final state of each direction
        return torch.cat(list(h[-directions:]), dim=1)

    def max_over_steps(seq, h, lengths):
        steps, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, padding_value=float("-inf"))
        return steps.max(dim=1).values

    def mean_over_steps(seq, h, lengths):
        steps, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, padding_value=0.0)
        return steps.sum(dim=1) / lengths.to(steps.device)[:, None]

    return {"last": last, "max": max_over_steps, "mean": mean_over_steps}


def torch_reference(torch, x, y, config, epochs, batch, device: str = "cpu") -> dict:
    """Train the reference on ids `x`, labels `y`; its samples/s (median of the epochs after the first)."""
    nn = torch.nn
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(1)  # TensorFlow runs on one thread here too (set once per process)
    directions = 2 if config.get("bidirectional") else 1
    pool = pooling.choose(config.get("pooling", "last"), _poolings(torch, directions))

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(config["vocab_size"], config["embed_dim"], padding_idx=0)
            self.rnn = nn.RNN(config["embed_dim"], config["units"], num_layers=config["num_layers"],
                              nonlinearity="tanh", batch_first=True, bidirectional=directions == 2)
            self.out = nn.Linear(directions * config["units"], config["num_classes"])

        def forward(self, ids, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                       enforce_sorted=False)
            seq, h = self.rnn(packed)  # h: last real step of each sequence, padding never seen
            return self.out(pool(seq, h, lengths))

    model = Ref().to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(x.astype(np.int64)).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)
    lengths = torch.from_numpy((x != 0).sum(1).clip(min=1).astype(np.int64))  # packing wants them on the CPU
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for epoch in range(epochs):
        perm = torch.from_numpy(np.random.default_rng(epoch).permutation(len(x)))
        sync()
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx.to(device)], lengths[idx]), yt[idx.to(device)])
            loss.backward()
            opt.step()
        sync()
        times.append(time.perf_counter() - start)
    steady = times[1:] or times
    return {"torch_samples_per_s": float(len(x) / np.median(steady)), "torch_version": torch.__version__,
            "torch_device": device, "torch_threads": torch.get_num_threads(),
            "torch_epoch_seconds": [round(t, 3) for t in times]}

