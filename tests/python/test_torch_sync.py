# SPDX-License-Identifier: MIT
"""bn1d.torch.SyncBatchNorm on K = 1..4 gloo processes (127.0.0.1) against torch's own BatchNorm
on the global batch (issue 19's proof).

One spawn per K (sync_harness.run_job, at most JOIN_TIMEOUT_S) runs every case of
sync_workers.py; the tests compare what the ranks returned. The oracle is a single
torch.nn.BatchNorm1d (BatchNorm2d for (N, C, H, W)) in float64 on the concatenated global batch:
the same values for float32 and 16-bit cases (exactly widened), loss = sum(y * g).

Accuracy (elementwise |got - ref| <= atol + rtol * |ref|):
  * float64 tensors: rtol = atol = 1e-12.
  * float32 tensors (float32 modules; the parameters and running statistics of mixed precision):
    rtol = 1e-5, atol = 1e-6 (values are O(1); float32's ulp is 6e-8 relative).
  * bfloat16 / float16 tensors (output, grad_input of mixed precision): within ULPS_16 = 2 ulps of
    the 16-bit dtype at the reference value (bn1d rounds once from float64, so 1 would do),
    ulps taken at no less than 2**-10 times the tensor's largest magnitude (cancellation near 0).
  * num_batches_tracked exact; running statistics bitwise equal on every rank.
grad_weight and grad_bias are each rank's contribution: their sum over ranks is compared, rtol
relative to the larger of |reference| and the sum of the ranks' |contributions| (each is rounded
to its dtype on its own).
"""

import copy
import dataclasses

import pytest
import torch
import torch.distributed as dist

import sync_workers as sw
from sync_harness import distributed_unavailable, run_job

F64 = torch.float64
WORLD_SIZES = (1, 2, 3, 4)
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6)}
ULPS_16 = 2
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}
DDP_LOSS_RTOL = 1e-5
DDP_PARAMETER_TOL = 1e-8
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

HARNESS_TIMEOUT_S = 40  # the harness test: ample time for two processes to start and fail
pytestmark = pytest.mark.skipif(distributed_unavailable() is not None,
                                reason=str(distributed_unavailable()))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """ranks(K): the per-rank results of sync_workers.job_all on K processes, spawned once per K
    (a failed spawn is reported by every test that needs it, without spawning again)."""
    cache = {}

    def get(world_size):
        if world_size not in cache:
            workdir = tmp_path_factory.mktemp(f"sync_k{world_size}")
            try:
                cache[world_size] = run_job(sw.job_all, world_size, str(workdir))
            except AssertionError as e:
                cache[world_size] = e
        if isinstance(cache[world_size], AssertionError):
            raise cache[world_size]
        return cache[world_size]
    return get


def test_harness_reports_a_hung_and_a_failed_rank(tmp_path):
    """Rank 0 hangs, rank 1 raises: run_job kills rank 0 at the deadline and names both."""
    with pytest.raises(AssertionError) as raised:
        run_job(sw.job_hang_or_fail, 2, str(tmp_path), timeout_s=HARNESS_TIMEOUT_S)
    message = str(raised.value)
    assert "rank 0 timed out" in message and "(in: sleeping on purpose)" in message, message
    assert "rank 1 exited with code 1" in message and "rank 1 fails on purpose" in message, message


# ---- comparisons -------------------------------------------------------------------------------

def assert_close(got, ref, what, magnitude=None):
    """The module docstring's accuracy rule for one tensor; `ref` is float64. magnitude: what
    rtol is relative to where that is more than |ref| (a sum's terms, each rounded)."""
    assert got is not None, f"{what}: None, expected a tensor"
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
    diff = (got.to(F64) - ref).abs()
    if got.dtype in MANTISSA_BITS:
        scale = ref.abs().max().item() if ref.numel() else 0.0
        magnitude = ref.abs().clamp(min=scale * 2.0**-10)
        exponent = torch.frexp(magnitude).exponent.to(F64)  # magnitude in [2**(e-1), 2**e)
        bound = ULPS_16 * torch.pow(2.0, exponent - 1 - MANTISSA_BITS[got.dtype])
    else:
        rtol, atol = TOLERANCES[got.dtype]
        bound = atol + rtol * (ref.abs() if magnitude is None else ref.abs().maximum(magnitude))
    bad = diff > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.numel()} off, max |diff| "
                           f"{diff.max().item():.3g} where |ref| {ref.abs().max().item():.3g}")


def reference_module(case):
    cls = torch.nn.BatchNorm2d if len(case.features) == 3 else torch.nn.BatchNorm1d
    return sw.make_module(cls, case, dtype=F64)


def packed(t, mask):
    """The valid positions of an (N, C, L) tensor as (M, C) rows: what torch normalizes."""
    return t.permute(0, 2, 1)[mask]


def masked_step(module, x, g, mask):
    """run_step of torch on the valid positions, output and grad_input put back in place (0 at
    the padding)."""
    record = sw.run_step(module, packed(x, mask), packed(g, mask))
    for key in ("output", "grad_input"):
        full = torch.zeros_like(x)
        full.permute(0, 2, 1)[mask] = record[key]
        record[key] = full
    return record


def reference_records(case, world_size, members):
    """(the case restricted to `members`, its reference records). Per step: the float64 torch
    record on the members' slices of the global batch concatenated; for an eval step without
    running statistics (each rank's own batch statistics): a list of per-member records."""
    module = reference_module(case)
    group_case = dataclasses.replace(case, counts=tuple(case.counts[r] for r in members))
    records = []
    for step in range(case.steps + case.eval_step):
        x, g = (torch.cat([sw.rank_slice(case, r, t.to(F64)) for r in members])
                for t in sw.global_batch(case, world_size, step))
        if case.valid:  # (masked cases track running statistics: their eval is not local)
            mask = torch.cat([sw.rank_slice(case, r, sw.global_mask(case, world_size, step))
                              for r in members])
            records.append(masked_step(module.train(step < case.steps), x, g, mask))
        elif step < case.steps:
            records.append(sw.run_step(module, x, g))
        elif module.track_running_stats:
            records.append(sw.run_step(module.eval(), x, g))
        else:
            records.append([sw.run_step(copy.deepcopy(module).eval(),
                                        sw.rank_slice(group_case, i, x),
                                        sw.rank_slice(group_case, i, g))
                            for i in range(len(members))])
    return group_case, records


def check_step(case, got, ref, where):
    """got: per-rank records of one step; ref: the reference record (or per-rank records)."""
    local = isinstance(ref, list)
    for rank, record in enumerate(got):
        expected = ref[rank] if local else ref
        for key in ("output", "grad_input"):
            want = expected[key] if local else sw.rank_slice(case, rank, expected[key])
            assert record[key].dtype == case.x_dtype, f"{key} dtype; {where} rank {rank}"
            assert_close(record[key], want, f"{key}; {where} rank {rank}")
        for key in ("running_mean", "running_var"):
            if expected[key] is None:
                assert record[key] is None, f"{key} should be None; {where} rank {rank}"
            else:
                assert record[key].dtype == case.dtype, f"{key} dtype; {where} rank {rank}"
                assert_close(record[key], expected[key], f"{key}; {where} rank {rank}")
                assert torch.equal(record[key], got[0][key]), (
                    f"{key} differs between rank {rank} and rank 0; {where}")
        assert (record["num_batches_tracked"] is None) == (
            expected["num_batches_tracked"] is None), f"num_batches_tracked; {where} rank {rank}"
        if expected["num_batches_tracked"] is not None:
            assert int(record["num_batches_tracked"]) == int(expected["num_batches_tracked"]), (
                f"num_batches_tracked; {where} rank {rank}")
    for key in ("grad_weight", "grad_bias"):
        parts = [record[key] for record in got]
        want = [r[key] for r in ref] if local else [ref[key]]
        if want[0] is None:
            assert all(p is None for p in parts), f"{key} should be None; {where}"
        elif local:
            for rank, (p, w) in enumerate(zip(parts, want)):
                assert_close(p, w, f"{key}; {where} rank {rank}")
        else:
            assert all(p.dtype == case.dtype for p in parts), f"{key} dtype; {where}"
            total = sum(p.to(F64) for p in parts)  # each rank's contribution
            assert_close(total.to(case.dtype), want[0], f"{key} summed over ranks; {where}",
                         magnitude=sum(p.to(F64).abs() for p in parts))


def check_records(case, world_size, per_rank, where, members=None):
    """per_rank[i]: the list of step records of rank members[i] (default: every rank), which
    formed one process group, against reference_records."""
    members = list(range(world_size)) if members is None else members
    for rank, records in zip(members, per_rank):
        assert not isinstance(records, dict), f"{where} rank {rank} raised:\n{records['exception']}"
    group_case, reference = reference_records(case, world_size, members)
    assert all(len(records) == len(reference) for records in per_rank)
    for step, ref in enumerate(reference):
        kind = "train" if step < case.steps else "eval"
        check_step(group_case, [records[step] for records in per_rank], ref,
                   f"{where} step {step} ({kind})")


# ---- parity ------------------------------------------------------------------------------------

PARITY = [pytest.param(k, case, id=f"K{k}-{case.name}")
          for k in WORLD_SIZES for case in sw.CASES if k >= case.min_world]


@pytest.mark.parametrize("world_size, case", PARITY)
def test_parity_with_torch_on_the_global_batch(ranks, world_size, case):
    per_rank = [result["parity"][case.name] for result in ranks(world_size)]
    check_records(case, world_size, per_rank, f"{case.name} on {world_size} processes")


@pytest.mark.parametrize("case", [c for c in sw.CASES if c.min_world == 1], ids=lambda c: c.name)
def test_without_torch_distributed_equals_torch_batchnorm(case):
    assert not dist.is_available() or not dist.is_initialized()
    per_rank = [sw.run_case(case, 0, 1)]
    check_records(case, 1, per_rank, f"{case.name} without init_process_group")


@pytest.mark.parametrize("world_size", [3, 4], ids=lambda k: f"K{k}")
def test_two_process_groups_at_once(ranks, world_size):
    results = ranks(world_size)
    for members in sw.subgroups(world_size):
        check_records(sw.SUBGROUP_CASE, world_size, [results[r]["subgroups"] for r in members],
                      f"the group of ranks {members} of {world_size}", members)


@pytest.mark.parametrize("world_size", WORLD_SIZES, ids=lambda k: f"K{k}")
def test_collectives_of_a_step(ranks, world_size):
    """One all_gather of 2C + 5 float64 values (a header of 5, two C-vectors) in a training
    forward and one in its backward (none with one process); none in eval with running
    statistics."""
    C = sw.COUNTED_CASE.features[0]
    one = [("all_gather", (2 * C + 5, F64))] if world_size > 1 else []
    for rank, result in enumerate(ranks(world_size)):
        phases = result["collectives"]
        assert "exception" not in phases, f"rank {rank}:\n{phases.get('exception')}"
        assert phases == dict(train_forward=one, train_backward=one, eval=[]), (rank, phases)


# ---- errors on one rank ------------------------------------------------------------------------

ERRORS = [pytest.param(k, name, id=f"K{k}-{name}") for k in WORLD_SIZES[1:]
          for name in list(sw.ERROR_CASES) + list(sw.STATELESS_ERRORS) + list(sw.OPTION_ERRORS)
          + ["global_count_1"]]


def check_raised(name, rank, raised):
    where = f"{name}, rank {rank}"
    assert raised is not None, f"{where}: nothing raised"
    is_value_error, cls, message = raised
    assert is_value_error, f"{where}: {cls} (not a ValueError): {message}"
    if name == "global_count_1":
        assert "more than 1 value per channel" in message, f"{where}: {message}"
    elif rank != sw.BAD_RANK:
        assert f"rank {sw.BAD_RANK}" in message, f"{where}: the message does not name rank " \
            f"{sw.BAD_RANK}: {message}"
    elif name == "input_1d":
        assert "expected at least 2D input (got 1D input)" in message, f"{where}: {message}"


@pytest.mark.parametrize("world_size, name", ERRORS)
def test_an_error_on_one_rank_raises_on_every_rank(ranks, world_size, name):
    results = [result["errors"][name] for result in ranks(world_size)]
    for rank, result in enumerate(results):
        assert "exception" not in result, f"{name} rank {rank}:\n{result.get('exception')}"
        check_raised(name, rank, result["raised"])
        for key in BUFFERS:
            before, after = result["before"][key], result["after"][key]
            assert (before is None and after is None) or torch.equal(before, after), (
                f"{name}, rank {rank}: {key} changed by the failing step")
    valid = (sw.VALID_AFTER_COUNT_ONE if name == "global_count_1" else
             sw.ERROR_BASE_STATELESS if name in sw.STATELESS_ERRORS else sw.ERROR_BASE)
    check_records(valid, world_size, [result["valid"] for result in results],
                  f"the valid step after {name} on {world_size} processes")


# ---- DistributedDataParallel -------------------------------------------------------------------

def reference_training(world_size):
    """Per-step losses, final parameters and BatchNorm buffers of the unconverted model trained
    in one process on the global batches."""
    model = sw.ddp_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=sw.DDP_LR)
    losses = []
    for step in range(sw.DDP_STEPS):
        x, target = sw.ddp_batch(world_size, step)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach() for p in model.parameters()], sw.module_state(model[1])


@pytest.mark.parametrize("world_size", [2, 3], ids=lambda k: f"K{k}")
def test_ddp_training_matches_one_process_on_the_global_batch(ranks, world_size):
    results = [result["ddp"] for result in ranks(world_size)]
    for rank, result in enumerate(results):
        assert "exception" not in result, f"DDP rank {rank}:\n{result.get('exception')}"
        assert all(result["kept"].values()), (rank, result["kept"])
    losses, parameters, buffers = reference_training(world_size)
    for step, want in enumerate(losses):
        # equal per-rank batches: the global mean loss is the mean of the ranks' means
        got = sum(result["losses"][step] for result in results) / world_size
        assert abs(got - want) <= DDP_LOSS_RTOL * abs(want), (
            f"step {step}: loss {got!r}, one process {want!r}")
    for rank, result in enumerate(results):
        for i, (p, want) in enumerate(zip(result["parameters"], parameters)):
            assert torch.allclose(p, want, rtol=DDP_PARAMETER_TOL, atol=DDP_PARAMETER_TOL), (
                f"parameter {i}, rank {rank}: max |diff| {(p - want).abs().max().item():.3g}")
        for key in BUFFERS:
            assert torch.allclose(result[key].to(F64), buffers[key].to(F64),
                                  rtol=DDP_PARAMETER_TOL, atol=DDP_PARAMETER_TOL), (key, rank)
            assert torch.equal(result[key], results[0][key]), (key, rank)
