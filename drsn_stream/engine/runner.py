"""The runner owns the model and the device.

CPU: a frozen TorchScript module, with torch's thread count set so one core stays free for
ingest (sources, DSP, sinks), warmed up by a few batch-1 runs. CUDA: pinned host buffers,
non-blocking copies, one CUDA graph per batch size of a fixed set (a batch is padded up to the
next size) and lane, fp16 only where a check on the artifact's validation windows shows >= 99.9 %
label agreement with fp32, and a warm-up of every batch size before ``ready`` is set. The module
is frozen on both devices (TorchScript folds constants and fuses, so fewer kernels run per batch:
docs/gpu/). On CUDA each batch size has ``lanes`` graphs on their own streams, so that while one
batch runs the next can be copied in and started (``submit`` / ``collect``): the paper-size model
is bound by kernel launches, not arithmetic, and two graphs in flight fill the GPU better than one.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drsn_stream.engine.contract import (
    CPU_SLICE,
    Pending,
    check_windows,
    cpu_threads_for_inference,
    default_batch_sizes,
    device_spec,
    infer_in_slices,
    split_packed,
)
from drsn_stream.models.artifact import quiet_torchscript
from drsn_stream.models.outputs import is_wrapped, to_probs

FP16_MIN_AGREEMENT = 0.999
# TorchScript's profiling executor profiles a graph's first run and optimizes it on the next; the
# third runs the optimized graph once, so the first live batch does not.
CPU_WARM_RUNS = 3
def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a clear error (``device_spec``)."""
    return torch.device(device_spec(spec))


@dataclass
class _GraphSlot:
    """One lane of one batch size: its own buffers, CUDA graph and stream."""

    size: int
    host_in: torch.Tensor
    dev_in: torch.Tensor
    out: torch.Tensor  # (size, classes + 1 + features): probabilities, noise index, features; one copy back
    host_out: torch.Tensor
    graph: torch.cuda.CUDAGraph | None
    stream: torch.cuda.Stream
    done: torch.cuda.Event
    busy: bool = False


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
        lanes: int = 2,
        net_config: dict[str, Any] | None = None,
        cpu_layout: str = "auto",
        scores: str | None = None,
        features: int = 0,
    ) -> None:
        """
        Args:
            module: the artifact's TorchScript module (eval mode), forward (b, n) -> (scores, noise).
            window: samples per window (n).
            device: "auto", "cpu", "cuda[:N]" or a torch.device.
            max_batch: largest batch.
            batch_sizes: CUDA graph sizes (default powers of two up to max_batch).
            fp16: "auto" (use it where verified), "off", or "on" (still verified; refused if it fails).
            cuda_graphs: capture CUDA graphs (CUDA only).
            threads: CPU threads for torch (default: all cores but one).
            validation: (m, n) normalized windows for the fp16 and channels-last agreement checks.
            lanes: batches in flight on CUDA (1 = strictly one after the other); 1 on the CPU.
            net_config: the artifact's ``model_config``; on the CPU, 1-D networks then run in their
                channels-last form (cpu_layout.py) where it agrees with the module.
            cpu_layout: "auto" (use the channels-last form where converted and verified, with its
                units' tails compiled on one thread), "script" (that form frozen in TorchScript) or "off".
            scores: what the module's first output holds (``ArtifactMeta.scores``): "logits" or
                "log_probs" (a softmax gives the probabilities) or "probs" (used as they are).
                None: "probs" for a module in the ``Probabilities`` wrapper, else "logits".
            features: width of the pooled features (``ArtifactMeta.features``) to return with each
                batch (``Pending.features``) through the module's ``forward_features``; 0: none.
        """
        self.scores = scores if scores is not None else ("probs" if is_wrapped(module) else "logits")
        self.features = int(features)
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.window = window
        self.max_batch = max_batch
        self.batch_sizes = sorted(set(batch_sizes or default_batch_sizes(max_batch)) | {max_batch})
        self.ready = threading.Event()
        self.fp16 = False
        self.fp16_agreement: float | None = None
        self.graphs = False
        self.notes: list[str] = []
        self.channels_last = False
        self.compiled_tails = False  # the channels-last form's units' tails in numba (cpu_layout.CompiledTails)
        # batches under this size through the channels-last form in one numba pass
        # (cpu_layout.SmallBatches, where calibrate found it faster); 0: none
        self.small_below = 0
        self.layout_check: tuple[float, float, float] | None = None
        self._slots: dict[int, list[_GraphSlot]] = {}
        self._next_lane: dict[int, int] = {}
        if self.device.type == "cpu":
            self.lanes = 1
            self.threads = threads or cpu_threads_for_inference()
            torch.set_num_threads(self.threads)
            self.module = self._freeze(module.eval())
            self.dtype = torch.float32
            if cpu_layout != "off" and net_config:
                self._use_channels_last(module, net_config, validation, compiled=cpu_layout == "auto")
        else:
            self.lanes = max(1, int(lanes))
            self.threads = torch.get_num_threads()
            base = copy.deepcopy(module).eval().to(self.device)
            self.module = self._freeze(copy.deepcopy(base))
            self.dtype = torch.float32
            if fp16 != "off" and validation is not None and len(validation):
                half = self._freeze(copy.deepcopy(base).half())
                agree = self._agreement(self.module, half, validation)
                self.fp16_agreement = agree
                if agree >= FP16_MIN_AGREEMENT:
                    self.module, self.dtype, self.fp16 = half, torch.float16, True
                else:
                    self.notes.append(f"fp16 refused: {agree:.4%} label agreement < {FP16_MIN_AGREEMENT:.1%}")
            elif fp16 == "on":
                self.notes.append("fp16 refused: the artifact carries no validation windows to verify it")
            self.graphs = cuda_graphs

    def _freeze(self, module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
        keep = ["forward_features"] if self.features else None
        try:
            with quiet_torchscript():
                return torch.jit.freeze(module, preserved_attrs=keep)
        except RuntimeError as exc:  # an artifact that cannot be frozen still runs
            note = f"not frozen ({str(exc).splitlines()[0]})"
            if note not in self.notes:
                self.notes.append(note)
            return module

    def _use_channels_last(self, module: torch.jit.ScriptModule, net_config: dict[str, Any],
                           validation: np.ndarray | None, compiled: bool = True) -> None:
        """Swaps in the channels-last form of a 1-D network when it agrees with the module on the
        validation windows (seeded Gaussian windows without them): with its units' tails compiled
        where numba is there and torch runs on one thread (those loops run on one), and small
        batches as one compiled pass below the batch size where that was faster, else frozen
        in TorchScript. Networks it cannot convert (2-D, even kernels) keep the module without a
        note: that is not a fault."""
        from drsn_stream.engine import cpu_layout as cl

        fast, _why = cl.convert(module, net_config)
        if fast is None:
            return
        if validation is not None and len(validation):
            x = np.asarray(validation[: cl.CHECK_WINDOWS], dtype=np.float32)
        else:
            x = np.random.default_rng(0).standard_normal((cl.CHECK_WINDOWS // 2, self.window)).astype(np.float32)
        if compiled and self.threads == 1:
            tails, _why = cl.compiled(fast)
            if tails is not None and self._layout_agrees(cl, tails, x, "with compiled tails "):
                # small batches: the whole pass compiled, checked on its own (the check's figures
                # then are the worse of the two), and used below the batch size where it is faster
                small, check = cl.small_batches(tails), self.layout_check
                if small is not None and self._layout_agrees(cl, small, x, "for small batches "):
                    (a0, p0, n0), (a1, p1, n1) = check, self.layout_check
                    self.layout_check = (min(a0, a1), max(p0, p1), max(n0, n1))
                    self.small_below = cl.calibrate(tails, self.window)
                else:
                    cl.drop_small_batches(tails)
                    self.layout_check = check
                self.module, self.channels_last, self.compiled_tails = tails, True, True
                return
        try:
            with quiet_torchscript():
                keep = ["forward_features"] if self.features else None
                fast = torch.jit.freeze(torch.jit.script(fast), preserved_attrs=keep)
        except RuntimeError as exc:
            self.notes.append(f"channels-last form not used: {str(exc).splitlines()[0]}")
            return
        if self._layout_agrees(cl, fast, x, ""):
            self.module, self.channels_last = fast, True

    def _layout_agrees(self, cl: Any, form: Any, x: np.ndarray, what: str) -> bool:
        """Whether ``form`` agrees with the module on ``x``; a note with the figures where not."""
        agree, dp, dn = cl.compare(self.module, form, x, scores=self.scores)
        self.layout_check = (agree, dp, dn)
        if agree >= cl.MIN_AGREEMENT and dp <= cl.MAX_PROB_DIFF and dn <= cl.MAX_NOISE_DIFF:
            return True
        self.notes.append(
            f"channels-last form {what}refused: {agree:.4%} label agreement, max |dp| {dp:.2e}, "
            f"max |d noise| {dn:.2e}"
        )
        return False

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({'fp16' if self.fp16 else 'fp32'}" + (
                ", CUDA graphs)" if self.graphs else ")"
            )
        layout = ", channels-last" if self.channels_last else ""
        if self.compiled_tails:
            layout += ", compiled tails"
            if self.small_below:
                layout += f", compiled whole below batch {self.small_below}"
        return f"CPU ({self.threads} torch thread{'s' if self.threads != 1 else ''}{layout})"

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
        """Readies the model so the first live batch is not slow: on CUDA every batch size (capturing
        CUDA graphs); on the CPU the runs TorchScript's profiling executor optimizes the graph from.

        The CPU takes any batch size, not only ``batch_sizes``, and a size's first call only adds the
        building of its oneDNN primitives (a few ms), so running every size would buy little and
        cost a heavy network (the speech model) seconds of a 2-core host's start-up.
        """
        if self.device.type == "cpu":
            with torch.inference_mode():
                for _ in range(CPU_WARM_RUNS):
                    self._forward(torch.zeros(1, self.window))
        else:
            for b in self.batch_sizes:
                self._lanes_for(b)
            torch.cuda.synchronize(self.device)
        self.ready.set()

    def _lanes_for(self, b: int) -> list[_GraphSlot]:
        lanes = self._slots.get(b)
        if lanes is None:
            lanes = self._slots[b] = [self._make_slot(b) for _ in range(self.lanes)]
            self._next_lane[b] = 0
        return lanes

    def _make_slot(self, b: int) -> _GraphSlot:
        dev = self.device
        host_in = torch.zeros(b, self.window, dtype=torch.float32, pin_memory=True)
        dev_in = torch.zeros(b, self.window, dtype=self.dtype, device=dev)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # TorchScript profiles its first runs: capture only after them
                out = self._forward_packed(dev_in)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = None
        if self.graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph):
                    out = self._forward_packed(dev_in)
            except RuntimeError as exc:
                self.notes.append(f"CUDA graph for batch {b} failed ({str(exc).splitlines()[0]}); plain launches")
                graph = None
        host_out = torch.empty(tuple(out.shape), dtype=torch.float32, pin_memory=True)
        return _GraphSlot(b, host_in, dev_in, out, host_out, graph, side, torch.cuda.Event())

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats = None
        if self.features:
            scores, noise, feats = self.module.forward_features(x)
            feats = feats.float()
        else:
            scores, noise = self.module(x)
        return to_probs(scores, self.scores), noise.float(), feats

    def _forward_packed(self, x: torch.Tensor) -> torch.Tensor:
        probs, noise, feats = self._forward(x)
        parts = [probs, noise.reshape(-1, 1)] + ([feats] if feats is not None else [])
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ inference
    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (b, window) float32 normalized windows -> (probs (b, classes), noise_index (b,)).

        Batches larger than the largest size (or CPU_SLICE on the CPU) run in slices; on CUDA the
        slices overlap across lanes.
        """
        check_windows(x, self.window)
        step = min(self.max_batch, CPU_SLICE) if self.device.type == "cpu" else self.max_batch
        if x.shape[0] <= step:
            return self.collect(self.submit(x))
        return infer_in_slices(self, x, step)

    def submit(self, x: np.ndarray) -> Pending:
        """Starts one batch (on CUDA at most max_batch rows). On the CPU it runs here and now; on CUDA it is
        queued on a free lane and ``collect`` waits for it. At most ``lanes`` batches may be
        submitted and not yet collected."""
        check_windows(x, self.window, None if self.device.type == "cpu" else self.max_batch)
        b = x.shape[0]
        if self.device.type == "cpu":
            ps, ns, fs = [], [], []
            with torch.inference_mode():
                for i in range(0, b, CPU_SLICE):
                    p, n, f = self._forward(torch.from_numpy(np.ascontiguousarray(x[i : i + CPU_SLICE], dtype=np.float32)))
                    ps.append(p.numpy())
                    ns.append(n.numpy())
                    if f is not None:
                        fs.append(f.numpy())
            if len(ps) == 1:
                return Pending(b, probs=ps[0], noise=ns[0], features=fs[0] if fs else None)
            return Pending(b, probs=np.concatenate(ps), noise=np.concatenate(ns),
                           features=np.concatenate(fs) if fs else None)
        size = next(s for s in self.batch_sizes if s >= b)
        lanes = self._lanes_for(size)
        k = self._next_lane[size]
        slot = lanes[k]
        if slot.busy:
            raise RuntimeError(f"all {self.lanes} lanes of batch size {size} are in flight; collect one first")
        self._next_lane[size] = (k + 1) % len(lanes)
        slot.busy = True
        slot.host_in[:b].copy_(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        with torch.inference_mode(), torch.cuda.stream(slot.stream):
            slot.dev_in.copy_(slot.host_in, non_blocking=True)  # pad rows keep old data: per-row model
            if slot.graph is not None:
                slot.graph.replay()
                out = slot.out
            else:
                out = self._forward_packed(slot.dev_in)
            slot.host_out.copy_(out, non_blocking=True)
            slot.done.record(slot.stream)
        return Pending(b, slot=slot)

    def done(self, pending: Pending) -> bool:
        """Whether ``collect(pending)`` would return at once."""
        return pending.slot is None or bool(pending.slot.done.query())

    def collect(self, pending: Pending) -> tuple[np.ndarray, np.ndarray]:
        """Waits for a submitted batch and returns (probs (b, classes), noise_index (b,)); the
        features, if any, land in ``pending.features``."""
        if pending.slot is None:
            return pending.probs, pending.noise
        slot = pending.slot
        slot.done.synchronize()
        res = slot.host_out[: pending.rows].numpy().copy()
        slot.busy = False
        return split_packed(res, self.features, pending)
