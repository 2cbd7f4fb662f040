"""The runner owns the model and the device.

CPU: a frozen TorchScript module, with torch's thread count set so one core stays free for
ingest (sources, DSP, sinks). CUDA: pinned host buffers, non-blocking copies, one CUDA graph per
batch size of a fixed set (a batch is padded up to the next size), fp16 only where a check on the
artifact's validation windows shows >= 99.9 % label agreement with fp32, and a warm-up of every
batch size before ``ready`` is set.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch

from drsn_stream.errors import ConfigError
from drsn_stream.models.artifact import quiet_torchscript

FP16_MIN_AGREEMENT = 0.999
# On the CPU a batch is run in slices of at most this many windows: beyond it the activations of
# one slice no longer fit the caches and throughput drops (1024 windows at once ran ~40 % slower
# than four slices of 256 on this project's 2-core machines).
CPU_SLICE = 256


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a clear error."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (or auto)")
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]")


def default_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two up to max_batch (and max_batch itself): 1, 2, 4, ..., max_batch."""
    sizes = []
    b = 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def cpu_threads_for_inference() -> int:
    """All cores but one (ingest needs one), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class _GraphSlot:
    size: int
    host_in: torch.Tensor
    dev_in: torch.Tensor
    probs: torch.Tensor
    noise: torch.Tensor
    host_probs: torch.Tensor
    host_noise: torch.Tensor
    graph: torch.cuda.CUDAGraph | None


class Runner:
    """Runs a loaded artifact module on windows: ``infer(x (b, n) float32) -> (probs, noise)``."""

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        window: int,
        device: str | torch.device = "auto",
        max_batch: int = 256,
        batch_sizes: list[int] | None = None,
        fp16: str = "auto",
        cuda_graphs: bool = True,
        threads: int | None = None,
        validation: np.ndarray | None = None,
    ) -> None:
        """
        Args:
            module: the artifact's TorchScript module (eval mode), forward (b, n) -> (logits, noise).
            window: samples per window (n).
            device: "auto", "cpu", "cuda[:N]" or a torch.device.
            max_batch: largest batch.
            batch_sizes: CUDA graph sizes (default powers of two up to max_batch).
            fp16: "auto" (use it where verified), "off", or "on" (still verified; refused if it fails).
            cuda_graphs: capture CUDA graphs (CUDA only).
            threads: CPU threads for torch (default: all cores but one).
            validation: (m, n) normalized windows for the fp16 agreement check.
        """
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.window = window
        self.max_batch = max_batch
        self.batch_sizes = sorted(set(batch_sizes or default_batch_sizes(max_batch)))
        self.ready = threading.Event()
        self.fp16 = False
        self.fp16_agreement: float | None = None
        self.graphs = False
        self.notes: list[str] = []
        self._slots: dict[int, _GraphSlot] = {}
        if self.device.type == "cpu":
            self.threads = threads or cpu_threads_for_inference()
            torch.set_num_threads(self.threads)
            try:
                with quiet_torchscript():
                    self.module = torch.jit.freeze(module.eval())
            except RuntimeError as exc:  # an artifact that cannot be frozen still runs
                self.notes.append(f"not frozen ({str(exc).splitlines()[0]})")
                self.module = module.eval()
            self.dtype = torch.float32
        else:
            self.threads = torch.get_num_threads()
            base = module.eval().to(self.device)
            self.module = base
            self.dtype = torch.float32
            if fp16 != "off" and validation is not None and len(validation):
                half = copy.deepcopy(base).half()
                agree = self._agreement(base, half, validation)
                self.fp16_agreement = agree
                if agree >= FP16_MIN_AGREEMENT:
                    self.module, self.dtype, self.fp16 = half, torch.float16, True
                else:
                    self.notes.append(f"fp16 refused: {agree:.4%} label agreement < {FP16_MIN_AGREEMENT:.1%}")
            elif fp16 == "on":
                self.notes.append("fp16 refused: the artifact carries no validation windows to verify it")
            self.graphs = cuda_graphs

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({'fp16' if self.fp16 else 'fp32'}" + (
                ", CUDA graphs)" if self.graphs else ")"
            )
        return f"CPU ({self.threads} torch thread{'s' if self.threads != 1 else ''})"

    def _agreement(self, m32: torch.jit.ScriptModule, m16: torch.jit.ScriptModule, val: np.ndarray) -> float:
        same = 0
        with torch.inference_mode():
            for i in range(0, len(val), self.max_batch):
                x = torch.from_numpy(np.ascontiguousarray(val[i : i + self.max_batch], dtype=np.float32)).to(self.device)
                a = m32(x)[0].argmax(1)
                b = m16(x.half())[0].argmax(1)
                same += int((a == b).sum())
        return same / len(val)

    # ------------------------------------------------------------------ warm-up
    def warmup(self) -> None:
        """Runs every batch size (capturing CUDA graphs) so the first live batch is not slow."""
        if self.device.type == "cpu":
            with torch.inference_mode():
                for b in self.batch_sizes:
                    for _ in range(2):
                        self.module(torch.zeros(b, self.window))
        else:
            for b in self.batch_sizes:
                self._slots[b] = self._make_slot(b)
            torch.cuda.synchronize(self.device)
        self.ready.set()

    def _make_slot(self, b: int) -> _GraphSlot:
        dev = self.device
        host_in = torch.zeros(b, self.window, dtype=torch.float32, pin_memory=True)
        dev_in = torch.zeros(b, self.window, dtype=self.dtype, device=dev)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # TorchScript profiles its first runs: capture only after them
                probs, noise = self._forward(dev_in)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = None
        if self.graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph):
                    probs, noise = self._forward(dev_in)
            except RuntimeError as exc:
                self.notes.append(f"CUDA graph for batch {b} failed ({str(exc).splitlines()[0]}); plain launches")
                graph = None
        host_probs = torch.empty(tuple(probs.shape), dtype=torch.float32, pin_memory=True)
        host_noise = torch.empty(tuple(noise.shape), dtype=torch.float32, pin_memory=True)
        return _GraphSlot(b, host_in, dev_in, probs, noise, host_probs, host_noise, graph)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, noise = self.module(x)
        return torch.softmax(logits.float(), dim=1), noise.float()

    # ------------------------------------------------------------------ inference
    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (b, window) float32 normalized windows -> (probs (b, classes), noise_index (b,))."""
        if x.ndim != 2 or x.shape[1] != self.window:
            raise ValueError(f"expected windows of shape (b, {self.window}), got {x.shape}")
        outs_p, outs_n = [], []
        step = min(self.max_batch, CPU_SLICE) if self.device.type == "cpu" else self.max_batch
        for i in range(0, x.shape[0], step):
            p, n = self._infer_chunk(x[i : i + step])
            outs_p.append(p)
            outs_n.append(n)
        if len(outs_p) == 1:
            return outs_p[0], outs_n[0]
        return np.concatenate(outs_p), np.concatenate(outs_n)

    def _infer_chunk(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = x.shape[0]
        if self.device.type == "cpu":
            with torch.inference_mode():
                probs, noise = self._forward(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return probs.numpy(), noise.numpy()
        size = next((s for s in self.batch_sizes if s >= b), self.batch_sizes[-1])
        slot = self._slots.get(size)
        if slot is None:
            slot = self._slots[size] = self._make_slot(size)
        slot.host_in[:b].copy_(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        with torch.inference_mode():
            slot.dev_in.copy_(slot.host_in, non_blocking=True)  # pad rows keep old data: per-row model
            if slot.graph is not None:
                slot.graph.replay()
                probs, noise = slot.probs, slot.noise
            else:
                probs, noise = self._forward(slot.dev_in)
            slot.host_probs.copy_(probs, non_blocking=True)
            slot.host_noise.copy_(noise, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return slot.host_probs[:b].numpy().copy(), slot.host_noise[:b].numpy().copy()
