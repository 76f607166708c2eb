# SPDX-License-Identifier: MIT
"""The cases of test_torch_sync.py and the code each rank runs for them (not a test module).

Both sides build their data here: a case's global batch (every rank's slice, concatenated in
rank order along N) is generated from a seed derived from the case's name, the world size and
the step, identically in every process; the modules start from the same seeded parameters and
running statistics. The ranks run bn1d.torch.SyncBatchNorm on their slices (job_all, spawned by
sync_harness.run_job); test_torch_sync.py runs torch's own BatchNorm on the global batch.
"""

import dataclasses
import datetime
import time
import traceback
import zlib

import torch
import torch.distributed as dist
import torch.nn.functional as F

import bn1d.torch as bt
from sync_harness import mark_progress


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity case: `steps` training steps (forward, loss = sum(y * g), backward), then one
    eval step when `eval_step`. counts[r] is rank r's N (the first K are used)."""
    name: str
    features: tuple  # (C,) or (C, L) or (C, H, W)
    counts: tuple = (4, 4, 4, 4)
    dtype: torch.dtype = torch.float64  # the module's
    input_dtype: torch.dtype = None  # a 16-bit dtype: mixed precision; None: the module's
    options: tuple = ()  # (name, value) pairs for the constructor: momentum, affine, ...
    steps: int = 2
    eval_step: bool = True
    min_world: int = 1
    channels_last: bool = False  # the ranks' inputs and loss weights: (N, *, C) memory
    valid: str = None  # "mask" or "lengths": (N, C, L) with valid positions (global_mask)

    @property
    def kwargs(self):
        return dict(self.options)

    @property
    def x_dtype(self):
        return self.input_dtype or self.dtype


F64, F32 = torch.float64, torch.float32
CASES = [
    Case("nc_f64", (5,)),
    Case("nc_f32", (5,), dtype=F32),
    Case("ncl_f64", (3, 7), counts=(3, 2, 4, 1)),
    Case("ncl_f32", (3, 7), counts=(3, 2, 4, 1), dtype=F32),
    Case("nchw_f64", (4, 3, 5), counts=(2, 3, 1, 2)),
    Case("nchw_f32", (4, 3, 5), counts=(2, 3, 1, 2), dtype=F32),
    Case("ncl_channels_last_f64", (3, 7), counts=(3, 2, 4, 1), channels_last=True),
    Case("nchw_channels_last_f32", (4, 3, 5), counts=(2, 3, 1, 2), dtype=F32,
         channels_last=True),
    Case("uneven_nc_f64", (6,), counts=(3, 1, 6, 2)),
    Case("uneven_ncl_f32", (2, 9), counts=(1, 5, 2, 3), dtype=F32),
    Case("empty_rank_f64", (4, 6), counts=(4, 0, 5, 0), min_world=2),
    Case("empty_rank_f32", (4, 6), counts=(4, 0, 5, 0), dtype=F32, min_world=2),
    Case("empty_first_nc_f64", (4,), counts=(0, 3, 2, 4), min_world=2),
    Case("momentum_none_f64", (3, 5), counts=(2, 3, 1, 4), options=(("momentum", None),),
         steps=3),
    Case("momentum_none_f32", (3, 5), counts=(2, 3, 1, 4), dtype=F32,
         options=(("momentum", None),), steps=3),
    Case("affine_false_f64", (3, 4), counts=(3, 2, 2, 5), options=(("affine", False),)),
    Case("affine_false_f32", (3, 4), counts=(3, 2, 2, 5), dtype=F32,
         options=(("affine", False),)),
    # eval without running statistics: each rank's own batch statistics (see test_torch_sync)
    Case("track_false_f64", (3, 4), counts=(3, 2, 2, 5),
         options=(("track_running_stats", False),)),
    Case("track_false_f32", (5,), counts=(3, 4, 5, 3), dtype=F32,
         options=(("track_running_stats", False), ("affine", False))),
    Case("steps_eval_f64", (2, 3), counts=(3, 4, 2, 1), options=(("momentum", 0.3),), steps=5),
    Case("masked_ncl_f64", (3, 6), counts=(3, 2, 4, 1), valid="mask"),
    Case("lengths_ncl_f32_empty", (2, 5), counts=(2, 0, 3, 2), dtype=F32, valid="lengths",
         min_world=2),
    Case("bf16_mixed", (3, 6), counts=(3, 2, 4, 1), dtype=F32, input_dtype=torch.bfloat16),
    Case("f16_mixed", (3, 6), counts=(3, 2, 4, 1), dtype=F32, input_dtype=torch.float16),
    Case("bf16_mixed_empty", (5,), counts=(6, 0, 3, 2), dtype=F32, input_dtype=torch.bfloat16,
         min_world=2),
]


def _seed(*parts):
    return zlib.crc32(repr(parts).encode())


def global_batch(case, world_size, step):
    """(x, g): the global input and loss weights of a step, in case.x_dtype. Channels get their
    own scale and shift so that every statistic matters."""
    gen = torch.Generator().manual_seed(_seed(case.name, world_size, step))
    C, spatial = case.features[0], case.features[1:]
    shape = (sum(case.counts[:world_size]), C) + spatial
    per_channel = (1, C) + (1,) * len(spatial)
    scale = torch.rand(per_channel, generator=gen, dtype=F64) * 2.5 + 0.5
    shift = torch.randn(per_channel, generator=gen, dtype=F64) * 2
    x = torch.randn(shape, generator=gen, dtype=F64) * scale + shift
    g = torch.randn(shape, generator=gen, dtype=F64)
    return x.to(case.x_dtype), g.to(case.x_dtype)


def global_mask(case, world_size, step):
    """(N, L) bool of the global batch of a step, True at the valid positions: sample n valid at
    [0, length_n), lengths drawn from [0, L]."""
    gen = torch.Generator().manual_seed(_seed(case.name, world_size, step, "mask"))
    lengths = torch.randint(0, case.features[1] + 1, (sum(case.counts[:world_size]), 1),
                            generator=gen)
    return torch.arange(case.features[1]) < lengths


def rank_slice(case, rank, t):
    """Rank `rank`'s rows of a global tensor."""
    start = sum(case.counts[:rank])
    return t[start:start + case.counts[rank]]


def make_module(cls, case, dtype=None, **extra):
    """cls(C, ..., **extra) with the case's options and seeded parameters and running statistics
    (values of case.dtype, stored in `dtype`, default case.dtype)."""
    dtype = dtype or case.dtype
    module = cls(case.features[0], dtype=dtype, **case.kwargs, **extra)
    gen = torch.Generator().manual_seed(_seed(case.name, "module"))
    C = case.features[0]
    values = dict(weight=(torch.rand(C, generator=gen, dtype=F64) * 1.5 + 0.5)
                  * torch.randn(C, generator=gen, dtype=F64).sign(),
                  bias=torch.randn(C, generator=gen, dtype=F64),
                  running_mean=torch.randn(C, generator=gen, dtype=F64),
                  running_var=torch.rand(C, generator=gen, dtype=F64) * 1.5 + 0.5)
    with torch.no_grad():
        for name, value in values.items():
            if getattr(module, name) is not None:
                getattr(module, name).copy_(value.to(case.dtype))
    return module


def module_state(module):
    """Copies of the module's buffers (None where absent)."""
    return {name: None if getattr(module, name) is None else getattr(module, name).clone()
            for name in ("running_mean", "running_var", "num_batches_tracked")}


def run_step(module, x, g, **valid):
    """One forward and backward of loss = sum(y * g); the tensors a test compares. valid: the
    mask or lengths argument of a masked step."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x, **valid)
    (y * g).sum().backward()
    record = dict(output=y.detach().clone(), grad_input=x.grad.clone(),
                  grad_weight=None, grad_bias=None, **module_state(module))
    if module.weight is not None:
        record.update(grad_weight=module.weight.grad.clone(), grad_bias=module.bias.grad.clone())
        module.weight.grad = module.bias.grad = None
    return record


def eval_step_alone(module, x, g, rank, group, **valid):
    """An eval step that must make no collective: rank 0 runs it while the other ranks wait in
    a barrier, then they run it while rank 0 waits in the barrier. A collective in eval would
    meet a barrier and fail or time out (CASE_TIMEOUT_S). group None: no torch.distributed."""
    module.eval()
    if group is not None and rank != 0:
        dist.barrier(group=group)
    record = run_step(module, x, g, **valid)
    if group is not None and rank == 0:
        dist.barrier(group=group)
    return record


def run_case(case, rank, world_size, group=None):
    """The records of every step of `case` on this rank, synchronized over `group`."""
    module = make_module(bt.SyncBatchNorm, case, process_group=group)
    records = []
    for step in range(case.steps + case.eval_step):
        x, g = (rank_slice(case, rank, t) for t in global_batch(case, world_size, step))
        if case.channels_last:
            x, g = (t.movedim(1, -1).contiguous().movedim(-1, 1) for t in (x, g))
        valid = {}
        if case.valid:
            mask = rank_slice(case, rank, global_mask(case, world_size, step))
            valid[case.valid] = mask if case.valid == "mask" else mask.sum(1)
        if step < case.steps:
            records.append(run_step(module, x, g, **valid))
        else:
            records.append(eval_step_alone(module, x, g, rank, group, **valid))
    return records


# ---- two process groups at once --------------------------------------------------------------

SUBGROUP_CASE = Case("subgroups_ncl_f64", (3, 4), counts=(3, 2, 4, 1), min_world=3)


def subgroups(world_size):
    """The member ranks of the two groups: ranks 0 and 1, and the others."""
    return [[0, 1], list(range(2, world_size))]


def run_subgroups(case, rank, world_size, group):
    """run_case over this rank's subgroup (`group`, the whole world, only bounds the time)."""
    members = subgroups(world_size)
    # every rank creates every group, in the same order (torch.distributed requires it)
    groups = [dist.new_group(ranks, timeout=datetime.timedelta(seconds=CASE_TIMEOUT_S))
              for ranks in members]
    mine = groups[0] if rank in members[0] else groups[1]
    try:
        return run_case(case, rank, world_size, mine)
    finally:
        dist.destroy_process_group(mine)


# ---- the collectives of a step -----------------------------------------------------------------

COLLECTIVES = ("all_gather", "all_reduce", "broadcast", "reduce", "gather", "scatter",
               "reduce_scatter", "all_to_all", "all_gather_object", "barrier",
               "_all_gather_base", "all_gather_into_tensor", "reduce_scatter_tensor")
COUNTED_CASE = Case("collectives_ncl_f32", (6, 3), counts=(3, 2, 0, 4), dtype=F32)


def _counting(calls, name, collective):
    def counted(*args, **kwargs):
        sent = args[1] if name == "all_gather" and len(args) > 1 else None
        calls.append((name, None if sent is None else (sent.numel(), sent.dtype)))
        return collective(*args, **kwargs)
    return counted


def run_counting(case, rank, world_size, group):
    """The torch.distributed collectives (name, (numel, dtype) sent by an all_gather) of a
    training forward, its backward and an eval forward and backward, counted by wrapping the
    functions of torch.distributed."""
    module = make_module(bt.SyncBatchNorm, case, process_group=group)
    x, g = (rank_slice(case, rank, t) for t in global_batch(case, world_size, 0))
    x.requires_grad_(True)
    calls, phases = [], {}
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    try:
        for name, collective in originals.items():
            setattr(dist, name, _counting(calls, name, collective))
        y = module(x)
        phases["train_forward"], calls[:] = list(calls), []
        (y * g).sum().backward()
        phases["train_backward"], calls[:] = list(calls), []
        (module.eval()(x) * g).sum().backward()
        phases["eval"] = list(calls)
    finally:
        for name, collective in originals.items():
            setattr(dist, name, collective)
    return phases


# ---- errors on one rank ------------------------------------------------------------------------

def _one_d(x):
    return x[0, :, 0].contiguous()


def _four_d(x):
    return x.unsqueeze(-1)


def _wrong_channels(x):
    return torch.cat([x, x[:, :1]], dim=1)


def _float64(x):
    return x.double()  # to a float32 module


def _int64(x):
    return x.long()


ERROR_BASE = Case("error_valid_ncl_f32", (3, 5), counts=(3, 2, 4, 1), dtype=F32, steps=1,
                  eval_step=False, min_world=2)
ERROR_CASES = {"input_1d": _one_d, "input_4d": _four_d, "wrong_channels": _wrong_channels,
               "float64_input": _float64, "int64_input": _int64}
# A module without parameters or running statistics (nothing to check the channel count against
# but num_features): the wrong channel count on one rank still raises on every rank.
ERROR_BASE_STATELESS = Case("error_valid_ncl_f32_stateless", (3, 5), counts=(3, 2, 4, 1),
                            dtype=F32, steps=1, eval_step=False, min_world=2,
                            options=(("affine", False), ("track_running_stats", False)))
STATELESS_ERRORS = {"wrong_channels_stateless": _wrong_channels}
# Options that travel with the statistics: rank BAD_RANK's module disagrees for one step.
OPTION_ERRORS = {"eps_differs": ("eps", 1e-3), "momentum_differs": ("momentum", 0.25)}
BAD_RANK = 1
COUNT_ONE_BASE = Case("error_count_one_nc_f64", (4,), counts=(1, 0, 0, 0), steps=1,
                      eval_step=False, min_world=2)
VALID_AFTER_COUNT_ONE = Case("error_valid_nc_f64", (4,), counts=(3, 2, 1, 4), steps=1,
                             eval_step=False, min_world=2)


def _attempt(module, x, g):
    """What a forward and backward raised: (is a ValueError, class name, message); None if
    nothing."""
    try:
        x = x.detach().clone().requires_grad_(x.is_floating_point())
        (module(x) * g).sum().backward()
    except Exception as e:  # the test checks the class
        return isinstance(e, ValueError), type(e).__name__, str(e)
    return None


def run_error_case(bad_case, valid_case, rank, world_size, corrupt, option, group):
    """A failing step (this rank's slice of bad_case; on rank BAD_RANK its input and loss weights
    through `corrupt`, and the module's option (name, value) changed for that step), the buffers
    before and after it, then one valid step of valid_case."""
    module = make_module(bt.SyncBatchNorm, valid_case, process_group=group)
    x, g = (rank_slice(bad_case, rank, t)
            for t in global_batch(bad_case, world_size, 0))
    if corrupt is not None and rank == BAD_RANK:  # g too: if forward passed, backward would run
        x, g = corrupt(x), corrupt(g)
    name, value = option or ("eps", module.eps)
    agreed = getattr(module, name)
    if rank == BAD_RANK:
        setattr(module, name, value)
    before = module_state(module)
    raised = _attempt(module, x, g)
    after = module_state(module)
    setattr(module, name, agreed)
    x, g = (rank_slice(valid_case, rank, t)
            for t in global_batch(valid_case, world_size, 0))
    return dict(raised=raised, before=before, after=after, valid=[run_step(module, x, g)])


# ---- DistributedDataParallel -------------------------------------------------------------------

DDP_STEPS = 60
DDP_ROWS_PER_RANK = 6
DDP_LR = 0.1


def ddp_model():
    """Linear(8, 16) -> BatchNorm1d(16) -> ReLU -> Linear(16, 1) in float64, seeded."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(2024)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16),
                                torch.nn.ReLU(), torch.nn.Linear(16, 1)).double()
    torch.random.set_rng_state(gen_state)
    return model


def ddp_batch(world_size, step):
    """(x, target) of the global batch of a step: world_size * DDP_ROWS_PER_RANK rows."""
    gen = torch.Generator().manual_seed(_seed("ddp", world_size, step))
    x = torch.randn(world_size * DDP_ROWS_PER_RANK, 8, generator=gen, dtype=F64) * 2 + 1
    target = x[:, :1] * 0.5 - x[:, 1:2] ** 2 + torch.randn(x.shape[0], 1, generator=gen,
                                                              dtype=F64)
    return x, target


def run_ddp(rank, world_size):
    """DDP_STEPS SGD steps of the converted model under DDP; per-step local losses."""
    model = ddp_model()
    bn_params = (model[1].weight, model[1].bias)
    bn_buffers = (model[1].running_mean, model[1].running_var)
    optimizer = torch.optim.SGD(model.parameters(), lr=DDP_LR)  # built before the conversion
    model = bt.convert_sync_batchnorm(model)
    kept = dict(converted=isinstance(model[1], bt.SyncBatchNorm),
                same_parameters=model[1].weight is bn_params[0] and model[1].bias is bn_params[1],
                same_buffers=model[1].running_mean is bn_buffers[0]
                and model[1].running_var is bn_buffers[1])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    rows = slice(rank * DDP_ROWS_PER_RANK, (rank + 1) * DDP_ROWS_PER_RANK)
    losses = []
    for step in range(DDP_STEPS):
        x, target = ddp_batch(world_size, step)
        optimizer.zero_grad()
        loss = F.mse_loss(ddp(x[rows]), target[rows])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(kept=kept, losses=losses,
                parameters=[p.detach().clone() for p in model.parameters()],
                **module_state(model[1]))


# ---- the harness's own failures -----------------------------------------------------------------

def job_hang_or_fail(rank, world_size, workdir):
    """Rank 0 never returns, rank 1 raises: what sync_harness.run_job must report, in time."""
    if rank == 0:
        mark_progress(workdir, rank, "sleeping on purpose")
        time.sleep(3600)
    raise RuntimeError(f"rank {rank} fails on purpose")


# ---- the job of one rank -----------------------------------------------------------------------

CASE_TIMEOUT_S = 20  # a rank stuck in a case's collective gives up and goes on to the next case


def _guarded(workdir, rank, name, f, *args):
    """f(*args, group) on a new process group (the default group stays for DDP), or
    {"exception": its traceback}: one broken case fails its own test only; the other ranks get
    out of its group's collectives within CASE_TIMEOUT_S and meet again in the next group."""
    mark_progress(workdir, rank, name)
    group = dist.new_group(timeout=datetime.timedelta(seconds=CASE_TIMEOUT_S))
    try:
        return f(*args, group=group)
    except Exception:
        return {"exception": traceback.format_exc()}
    finally:
        dist.destroy_process_group(group)


def job_all(rank, world_size, workdir):
    """Every case for this world size: {"parity": {name: records}, "errors": {name: record},
    "ddp": record or None, "collectives": record, "subgroups": records (K >= 3)}."""
    result = dict(parity={}, errors={}, ddp=None)
    if world_size in (2, 3):
        mark_progress(workdir, rank, "ddp")
        try:
            result["ddp"] = run_ddp(rank, world_size)
        except Exception:
            result["ddp"] = {"exception": traceback.format_exc()}
    for case in CASES:
        if world_size >= case.min_world:
            result["parity"][case.name] = _guarded(workdir, rank, case.name, run_case, case, rank,
                                                   world_size)
    result["collectives"] = _guarded(workdir, rank, "collectives", run_counting, COUNTED_CASE,
                                     rank, world_size)
    if world_size >= SUBGROUP_CASE.min_world:
        result["subgroups"] = _guarded(workdir, rank, "subgroups", run_subgroups, SUBGROUP_CASE,
                                       rank, world_size)
    if world_size >= 2:
        for name, corrupt in ERROR_CASES.items():
            result["errors"][name] = _guarded(workdir, rank, name, run_error_case, ERROR_BASE,
                                              ERROR_BASE, rank, world_size, corrupt, None)
        for name, corrupt in STATELESS_ERRORS.items():
            result["errors"][name] = _guarded(workdir, rank, name, run_error_case,
                                              ERROR_BASE_STATELESS, ERROR_BASE_STATELESS, rank,
                                              world_size, corrupt, None)
        for name, option in OPTION_ERRORS.items():
            result["errors"][name] = _guarded(workdir, rank, name, run_error_case, ERROR_BASE,
                                              ERROR_BASE, rank, world_size, None, option)
        result["errors"]["global_count_1"] = _guarded(
            workdir, rank, "global_count_1", run_error_case, COUNT_ONE_BASE,
            VALID_AFTER_COUNT_ONE, rank, world_size, None, None)
    return result
