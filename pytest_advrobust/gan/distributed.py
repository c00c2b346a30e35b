"""Training generators with several processes: ``advrobust warm`` under ``torchrun``.

``torchrun --nproc-per-node=N -m pytest_advrobust.cli warm tests/robust`` (or
``torchrun --no-python advrobust warm ...``) starts N copies of the command.
Each calls :func:`init_from_env`, which joins them in one process group:

* backend: on a machine with CUDA (and NCCL), ``"cpu:gloo,cuda:nccl"`` --
  NCCL carries the gradients of CUDA training, gloo the small CPU-side
  messages (decisions, flags, objects); each rank's current CUDA device is
  ``cuda:LOCAL_RANK``, so ``--advrobust-device=auto`` (or ``cuda``) gives every
  rank its own GPU. Without CUDA: ``"gloo"``, and training runs on the CPU.
* every rank then runs the same tests in the same order. For each generator,
  rank 0 alone takes the cache lock and looks the key up, and broadcasts what
  to do; on a miss all ranks train together with DistributedDataParallel
  (see :func:`pytest_advrobust.gan.train.train_generator`), rank 0 stores the
  entry and every rank returns the same generator.

Nothing here does anything in a single process: :func:`is_distributed` is
false, :func:`rank` is 0, :func:`world_size` is 1 and the collectives return
their input. A process group that the caller initialised is adopted (not torn
down) by :func:`init_from_env`; one that nobody handed to this module is left
alone, so a plain ``pytest`` run inside someone else's distributed job keeps
the single-process behaviour.

The collectives are blocking: every rank must call them in the same order,
which holds as long as all ranks see the same tests, model and data (checked
per generator: ranks that computed different cache keys stop with an error).
``$ADVROBUST_DIST_TIMEOUT`` (seconds) bounds how long a rank waits for the
others (default: torch's own, 10 to 30 minutes depending on the backend).
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any, Dict, List, Optional

__all__ = [
    "all_gather_object",
    "all_true",
    "any_true",
    "backend",
    "barrier",
    "broadcast_object",
    "broadcast_state",
    "collective_device",
    "init_from_env",
    "is_distributed",
    "launched",
    "local_rank",
    "rank",
    "teardown",
    "TrainingSync",
    "world_size",
]

ENV_TIMEOUT = "ADVROBUST_DIST_TIMEOUT"

_state: Dict[str, Any] = {"active": False, "owned": False, "atexit": False}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except (TypeError, ValueError):
        return default


def launched() -> bool:
    """True when this process was started by ``torchrun`` (or alike) with more than one rank."""
    return _env_int("WORLD_SIZE", 1) > 1 and "RANK" in os.environ


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def is_distributed() -> bool:
    """True after :func:`init_from_env` joined (or adopted) a group of more than one process."""
    if not _state["active"]:
        return False
    dist = _dist()
    return dist is not None and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside distributed mode)."""
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes training together (1 outside distributed mode)."""
    return _dist().get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its machine (``$LOCAL_RANK``; 0 outside distributed mode)."""
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def backend() -> Optional[str]:
    """The process group's backend (``"gloo"``, ``"cpu:gloo,cuda:nccl"`` ...), or ``None``."""
    return str(_dist().get_backend()) if is_distributed() else None


def _timeout() -> Optional[datetime.timedelta]:
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"${ENV_TIMEOUT} must be a number of seconds, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"${ENV_TIMEOUT} must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def init_from_env() -> bool:
    """Join the ranks started by ``torchrun`` in one process group; True when distributed.

    Idempotent. Without a multi-rank launch (``$WORLD_SIZE`` > 1 and
    ``$RANK`` set) or without ``torch.distributed`` it does nothing and
    returns False. A default process group that is already initialised (by
    the caller) is adopted as it is. The group this call creates is destroyed
    at interpreter exit (or by :func:`teardown`).
    """
    if is_distributed():
        return True
    dist = _dist()
    if dist is None:
        return False
    if dist.is_initialized():
        _state.update(active=dist.get_world_size() > 1, owned=False)
        return is_distributed()
    if not launched():
        return False
    import torch

    name = "gloo"
    lr = _env_int("LOCAL_RANK", 0)
    if (
        torch.cuda.is_available()
        and dist.is_nccl_available()
        and 0 <= lr < torch.cuda.device_count()
    ):
        torch.cuda.set_device(lr)
        name = "cpu:gloo,cuda:nccl"
    kwargs: Dict[str, Any] = {"backend": name}
    timeout = _timeout()
    if timeout is not None:
        kwargs["timeout"] = timeout
    dist.init_process_group(**kwargs)
    _state.update(active=True, owned=True)
    if not _state["atexit"]:
        atexit.register(teardown)
        _state["atexit"] = True
    return is_distributed()


def teardown() -> None:
    """Leave distributed mode; destroy the process group if :func:`init_from_env` created it."""
    dist = _dist()
    owned = _state["owned"]
    _state.update(active=False, owned=False)
    if owned and dist is not None and dist.is_initialized():
        try:
            # Every rank arrives before any tears down: a group destroyed while a
            # peer still talks to it can abort the process at exit.
            dist.barrier()
        except Exception:  # pragma: no cover - a peer already gone
            pass
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass


# --------------------------------------------------------------------------- collectives
def collective_device():
    """Where small tensors for collectives live: the CPU when the backend has gloo, else the GPU."""
    import torch

    name = backend() or ""
    if "gloo" in name or "nccl" not in name:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def barrier() -> None:
    """Wait until every rank got here (no-op in a single process)."""
    if is_distributed():
        _dist().barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (plain data; pickled between our own ranks)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def _all_reduce(values: List[int], dtype: str, op_name: str, device: Any) -> List[int]:
    """``values`` reduced elementwise over the ranks by ``dist.ReduceOp.<op_name>``."""
    import torch

    dist = _dist()
    t = torch.tensor(values, dtype=getattr(torch, dtype), device=device)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op_name))
    return [int(v) for v in t.tolist()]


def _reduce_flag(flag: bool, op_name: str) -> bool:
    return bool(_all_reduce([1 if flag else 0], "int32", op_name, collective_device())[0])


def all_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on every rank."""
    return bool(flag) if not is_distributed() else _reduce_flag(bool(flag), "MIN")


def any_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on some rank."""
    return bool(flag) if not is_distributed() else _reduce_flag(bool(flag), "MAX")


def broadcast_state(state: Optional[Dict[str, Any]], src: int = 0) -> Dict[str, Any]:
    """A state dict of tensors from rank ``src`` on every rank, as CPU tensors.

    Only the names, shapes and dtypes travel as an object; the values are
    broadcast as tensors (nothing but plain data is ever unpickled).
    """
    import torch

    if not is_distributed():
        return dict(state or {})
    me = rank() == src
    spec = None
    if me:
        spec = [[k, list(v.shape), str(v.dtype).replace("torch.", "", 1)] for k, v in state.items()]
    spec = broadcast_object(spec, src=src)
    dev = collective_device()
    out: Dict[str, Any] = {}
    for name, shape, dtype in spec:
        if me:
            t = state[name].detach().to(dev).contiguous().clone()
        else:
            t = torch.empty(shape, dtype=getattr(torch, dtype), device=dev)
        if t.dtype == torch.bool:  # not every backend reduces/broadcasts bool
            u = t.to(torch.uint8)
            _dist().broadcast(u, src=src)
            t = u.to(torch.bool)
        else:
            _dist().broadcast(t, src=src)
        out[name] = t.cpu()
    return out


# --------------------------------------------------------------------------- training
class TrainingSync:
    """The collectives of one DDP training (:mod:`pytest_advrobust.gan.train`).

    ``TrainingSync(False)`` is a single process: rank 0 of 1, every method
    trivial. ``TrainingSync(True)`` needs the group that :func:`init_from_env`
    joined (RuntimeError otherwise); every rank must then call the same
    methods in the same order.
    """

    def __init__(self, active: bool):
        self.active = False
        self.rank, self.world = 0, 1
        if active:
            if not is_distributed():
                raise RuntimeError(
                    "distributed training needs pytest_advrobust.gan.distributed.init_from_env() "
                    "to have joined a process group of more than one process"
                )
            self.active, self.dist = True, _dist()
            self.rank, self.world = rank(), world_size()
            self.dev = collective_device()

    def wrap(self, module: Any, dev: Any) -> Any:
        """``module`` in DistributedDataParallel (buffers are synchronised before evaluations)."""
        if not self.active:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        kwargs = {"device_ids": [dev.index] if dev.type == "cuda" else None}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            kwargs["forward_sync_buffers"] = False  # torch >= 2.12 (buffers still synced at init)
        else:
            kwargs["broadcast_buffers"] = False
        return DistributedDataParallel(module, **kwargs)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        if not self.active:
            return bool(flag)
        import torch

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.dev)
        self.dist.broadcast(t, src=0)
        return bool(t.item())

    def any_flags(self, flags: List[bool]) -> List[bool]:
        """Per position: true when true on some rank (distributed only)."""
        values = [1 if f else 0 for f in flags]
        return [bool(v) for v in _all_reduce(values, "int32", "MAX", self.dev)]

    def sum_ints(self, values: List[int]) -> List[int]:
        """Per position: the sum over the ranks (distributed only)."""
        return _all_reduce(values, "int64", "SUM", self.dev)

    def per_rank(self, value: int) -> List[int]:
        """Every rank's ``value``, in rank order."""
        if not self.active:
            return [int(value)]
        one_hot = [0] * self.world
        one_hot[self.rank] = int(value)
        return self.sum_ints(one_hot)

    def sync_module(self, module: Any) -> None:
        """Overwrite every parameter and buffer of ``module`` with rank 0's."""
        if not self.active:
            return
        import torch

        with torch.no_grad():
            for t in module.state_dict().values():  # views of the module's own tensors
                if not isinstance(t, torch.Tensor):
                    continue
                if t.is_contiguous():
                    self.dist.broadcast(t, src=0)
                else:
                    c = t.contiguous()
                    self.dist.broadcast(c, src=0)
                    t.copy_(c)
