"""Matmul on the GPU: the SPEC matrix of the CPU suite, large shapes, streams and devices (H100)."""
from __future__ import annotations

import math

import pytest
import torch
from reference import TORCH, assert_close, device_target, matmul_tolerance, random_matmul_inputs
from test_matmul_cpu import CASES

from lowbit import Matmul, MatmulConfig

pytestmark = pytest.mark.gpu


def _poisoned(shape, out_dtype: str, device) -> torch.Tensor:
    if out_dtype in ("int8", "int32"):
        return torch.full(shape, 77, dtype=TORCH[out_dtype], device=device)
    return torch.full(shape, float("nan"), dtype=TORCH[out_dtype], device=device)


def _check_each_m(op, cfg, ms, rng, msg: str) -> None:
    """Runs `op` on fresh inputs of each m in `ms` into a poisoned output and checks it against the
    float64 reference."""
    for m in ms:
        inp = random_matmul_inputs(cfg, m, "cuda", rng, op=op)
        out = _poisoned((m, cfg.N), cfg.out_dtype, "cuda")
        inp.run(op, output=out)
        assert_close(out, inp.reference(), cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{msg} m={m}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matmul_matrix_gpu(case, rng, seed):
    cfg = MatmulConfig(**case.cfg)
    inp = random_matmul_inputs(cfg, case.lead, "cuda", rng, prepack_zeros=case.prepack)
    op = Matmul(cfg)
    ref = inp.reference()
    out_shape = (*inp.A.shape[:-1], cfg.N)
    output = _poisoned(out_shape, cfg.out_dtype, "cuda")
    result = inp.run(op, output=output)
    assert result is output
    assert_close(result, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{case.id} seed={seed} (output= given)")
    fresh = inp.run(op)
    assert fresh.device.type == "cuda" and fresh is not output
    assert_close(fresh, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{case.id} seed={seed} (no output=)")


def _small_grid_cases():
    """The SPEC cases whose default decode schedule takes the weights through the shared-memory stages
    (small grids, compiler.schedule._weight_ring)."""
    from lowbit.compiler.schedule import matmul_schedule

    cases = []
    for case in CASES:
        cfg = MatmulConfig(**case.cfg)
        sched = matmul_schedule(cfg, cfg.bucket_for(math.prod(case.lead)), "sm_90a")
        if sched.w_smem and not sched.wgmma:
            cases.append(case)
    return cases


SMALL_GRID_CASES = _small_grid_cases()


@pytest.mark.parametrize("case", SMALL_GRID_CASES, ids=[c.id for c in SMALL_GRID_CASES])
def test_matmul_matrix_gpu_register_weights(case, rng, seed):
    """The register path (weights loaded straight to registers, every larger grid's default) on the SPEC
    cases whose small grids take the shared-memory stages by default."""
    cfg = MatmulConfig(**case.cfg)
    inp = random_matmul_inputs(cfg, case.lead, "cuda", rng, prepack_zeros=case.prepack)
    op = Matmul(cfg, schedule={"w_smem": 0})
    output = _poisoned((*inp.A.shape[:-1], cfg.N), cfg.out_dtype, "cuda")
    inp.run(op, output=output)
    assert_close(output, inp.reference(), cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{case.id} w_smem=0 seed={seed}")


def _dequant_gpu(W_logical, scale, zeros, G):
    """float64 (w - z) * s on the GPU, and the size of its float16 intermediates |w - z| * |s|."""
    w = W_logical.cuda().double()
    s = scale.cuda().double().repeat_interleave(G, dim=1)
    z = zeros.cuda().double().repeat_interleave(G, dim=1)
    return (w - z) * s, 2 * (w - z).abs() * s.abs()


def _large_shape_tolerance(A, ref, deq, wmag, scale, zeros, offset_decode: bool):
    """The test_matmul_large_shapes bound on |out - ref|, ref = A @ deq^T (float64, on deq's device).

    The float16 dequantization rounds w - z and (w - z) * s (random errors: 4 sigma of their A-weighted
    sum), float32 accumulation, then one float16 rounding of the output. With offset_decode (the
    default for 'original' zeros in 8-row blocks and on the 16-row wide-N schedule, docs/api.md) each
    group's addend -(16 + z) s is rounded to float16 once: an error of up to (16 + z) s / 2048 shared
    by the group's weights, so it enters as the group's |sum of A| times that bound."""
    a = A.double()
    weight_err = ((a ** 2) @ (wmag ** 2).t()).sqrt()
    acc_err = 1e-5 * a.norm(dim=1, keepdim=True) * deq.norm(dim=1)[None, :]
    tol = 2.0 ** -10 * ref.abs() + 4 * 2.0 ** -11 * weight_err + acc_err
    if offset_decode:
        group_sums = a.reshape(a.shape[0], scale.shape[1], -1).sum(dim=2).abs()
        addend = (16 + zeros.double()) * scale.double() * 2.0 ** -11 * (1 + 2.0 ** -10)
        tol = tol + group_sums @ addend.to(a.device).t()
    return tol


@pytest.mark.parametrize("N,K", [(256, 256), (4096, 4096), (8192, 28672), (28672, 8192)])
def test_matmul_large_shapes(N, K, rng, seed):
    from lowbit.compiler.schedule import matmul_schedule

    cfg = MatmulConfig(M=[1, 16, 64, 256], N=N, K=K, W_dtype="uint4", accum_dtype="float32", with_scaling=True,
                       with_zeros=True, group_size=128, zeros_mode="original")
    target = device_target()
    op = Matmul(cfg)
    W = torch.randint(0, 16, (N, K), generator=rng)
    scale = (torch.rand(N, K // 128, generator=rng) * 0.02 + 0.005).half()
    zeros = (torch.rand(N, K // 128, generator=rng) * 15).half()
    Wt, st, zt = (t.cuda() for t in op.transform_weight(W, scale=scale, zeros=zeros))
    deq, wmag = _dequant_gpu(W, scale, zeros, 128)
    for m in (1, 16, 64, 256):
        A = torch.randn(m, K, generator=rng).half().cuda()
        out = _poisoned((m, N), "float16", "cuda")
        op(A, Wt, scale=st, zeros=zt, output=out)
        ref = A.double() @ deq.t()
        assert not torch.isnan(out).any(), f"m={m} N={N} K={K} seed={seed}: NaN (unwritten) outputs"
        offset = bool(matmul_schedule(cfg, m, target).offset_decode)
        tol = _large_shape_tolerance(A, ref, deq, wmag, scale, zeros, offset)
        err = (out.double() - ref).abs()
        assert bool((err <= tol).all()), \
            f"m={m} N={N} K={K} offset_decode={offset} seed={seed}: max err/tol {(err / tol).max().item():.4g}"


def test_gpu_agrees_with_cpu(rng, seed):
    cfg = MatmulConfig(M=[1, 16], N=256, K=512, W_dtype="int4", with_scaling=True, group_size=128,
                       accum_dtype="float32", with_bias=True)
    inp = random_matmul_inputs(cfg, (13,), "cpu", rng)
    op = Matmul(cfg)
    cpu = inp.run(op)
    gpu = op(inp.A.cuda(), inp.W.cuda(), **{k: v.cuda() for k, v in inp.kwargs().items()})
    # the GPU decode kernel applies the scale to float32 sums (no float16 weight rounding), the CPU loops
    # round each weight: both within the reference's tolerance, and of each other within twice that
    ref = inp.reference()
    assert_close(cpu, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"cpu seed={seed}")
    assert_close(gpu.cpu(), ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"gpu seed={seed}")
    tol = matmul_tolerance(ref, cfg.out_dtype, cfg.accum_dtype, cfg.K)
    assert bool(((gpu.cpu().double() - cpu.double()).abs() <= 2 * tol).all()), f"seed={seed}: GPU and CPU differ"


def test_non_default_stream_and_explicit_device(rng, seed):
    cfg = MatmulConfig(M=[1, 16, 64], N=512, K=1024, W_dtype="uint4", with_scaling=True, with_zeros=True,
                       group_size=128, accum_dtype="float32")
    inp = random_matmul_inputs(cfg, (33,), "cpu", rng)
    dev = torch.device("cuda:0")
    args = (inp.A.to(dev), inp.W.to(dev))
    kwargs = {k: v.to(dev) for k, v in inp.kwargs().items()}
    ref = inp.reference()
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        out = _poisoned((33, cfg.N), "float16", dev)
        Matmul(cfg)(*args, output=out, **kwargs)
    stream.synchronize()
    assert out.device == dev
    assert_close(out, ref, "float16", "float32", cfg.K, msg=f"seed={seed}")


def test_device_mix_is_rejected(rng):
    cfg = MatmulConfig(M=16, N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32)
    inp = random_matmul_inputs(cfg, (16,), "cpu", rng)
    with pytest.raises(ValueError, match="device"):
        Matmul(cfg)(inp.A.cuda(), inp.W, **inp.kwargs())


SPLIT_CASES = [
    # (config fields, schedule overrides): f16 and f32 accumulation, zeros, LUT formats, int8 A (whose
    # 2-bit codes decode scaled by 64), bias, a K that is not a whole number of superblocks
    (dict(W_dtype="int4", with_scaling=True, group_size=128), dict(split_k=2)),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, accum_dtype="float32",
          with_bias=True), dict(split_k=3, warps_k=1)),
    (dict(W_dtype="nf4"), dict(split_k=4, warps_k=2, w_prefetch=1)),
    (dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int8", with_bias=True), dict(split_k=4)),
    (dict(W_dtype="int4", with_scaling=True, group_size=32, accum_dtype="float32"), dict(split_k=8, warps_k=1)),
]


@pytest.mark.parametrize("fields,schedule", SPLIT_CASES, ids=[f"{f['W_dtype']}-{s}" for f, s in SPLIT_CASES])
def test_split_k(fields, schedule, rng, seed):
    """K split over blocks: every m (including one past the largest bucket, which grows the workspace)
    and a repeat of each launch (the kernel must leave its tile locks at zero)."""
    cfg = MatmulConfig(M=[1, 16], N=320, K=1664, **fields)
    op = Matmul(cfg, schedule=schedule)
    for m in (1, 7, 16, 40):
        inp = random_matmul_inputs(cfg, m, "cuda", rng, op=op)
        ref = inp.reference()
        for attempt in range(2):
            out = _poisoned((m, cfg.N), cfg.out_dtype, "cuda")
            inp.run(op, output=out)
            assert_close(out, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K,
                         msg=f"{fields} {schedule} m={m} launch {attempt} seed={seed}")


W_SMEM_CASES = [
    # (config fields, schedule overrides): decode kernels whose weights travel through the shared-memory
    # stages; N with a partial 16-row tile, K not a whole number of iterations
    (dict(W_dtype="int4", with_scaling=True, group_size=128), dict(w_smem=1, stages=4)),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="quantized"),
     dict(w_smem=1, stages=6)),
    (dict(W_dtype="nf4"), dict(w_smem=1, stages=3, warps_k=2)),
    (dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32", with_bias=True), dict(w_smem=1, stages=5)),
    (dict(W_dtype="int4", with_scaling=True, group_size=32, accum_dtype="float32"), dict(w_smem=1, stages=8, split_k=4, warps_k=1)),
    (dict(W_dtype="float16"), dict(w_smem=1, stages=4, w_prefetch=1)),
    # the defaults of grids of many waves at 8 rows (compiler.schedule._weight_ring)
    (dict(W_dtype="int4", with_scaling=True, group_size=128), dict(w_smem=1, stages=2, w_prefetch=1)),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128), dict(w_smem=1, stages=2, w_prefetch=1)),
]


@pytest.mark.parametrize("fields,schedule", W_SMEM_CASES, ids=[f"{f['W_dtype']}-{s}" for f, s in W_SMEM_CASES])
def test_decode_w_smem(fields, schedule, rng, seed):
    cfg = MatmulConfig(M=[1, 16], N=328, K=1664, **fields)
    op = Matmul(cfg, schedule=schedule)
    _check_each_m(op, cfg, (1, 7, 16), rng, f"{fields} {schedule} seed={seed}")


SCALE_BEFORE_CASES = [  # scale_after=0: the decoded weights are scaled (and shifted) in f16 before the mma
    dict(W_dtype="int4", with_scaling=True, group_size=32),
    dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=32),
    dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="rescale"),
    dict(W_dtype="uint2", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="quantized"),
    dict(W_dtype="fp4_e2m1", with_scaling=True, group_size=32, with_bias=True),
    dict(W_dtype="nf4", with_scaling=True, group_size=64, accum_dtype="float16"),
    dict(W_dtype="int2", with_scaling=True, group_size=128),
]


@pytest.mark.parametrize("fields", SCALE_BEFORE_CASES, ids=[f"{f['W_dtype']}-g{f['group_size']}" for f in SCALE_BEFORE_CASES])
def test_decode_scale_before_mma(fields, rng, seed):
    cfg = MatmulConfig(M=[1, 16], N=328, K=1664, **fields)
    op = Matmul(cfg, schedule=dict(scale_after=0))
    _check_each_m(op, cfg, (1, 7, 16), rng, f"{fields} scale_after=0 seed={seed}")


OFFSET_CASES = [dict(W_dtype="uint4", with_zeros=True, group_size=128),
                dict(W_dtype="uint4", with_zeros=True, group_size=-1, with_bias=True),
                dict(W_dtype="int4", group_size=128)]


@pytest.mark.parametrize("fields", OFFSET_CASES, ids=["uint4-g128", "uint4-per-channel-bias", "int4-g128"])
def test_offset_decode(fields, rng, seed):
    """offset_decode=1 (4-bit codes as 16 + code, or 24 + w for int4; scale and 'original' zero in one
    fma) at 8 and 16 rows."""
    cfg = MatmulConfig(M=[1, 16], N=328, K=1664, with_scaling=True, **fields)
    op = Matmul(cfg, schedule=dict(scale_after=0, offset_decode=1))
    _check_each_m(op, cfg, (1, 7, 16), rng, f"{fields} offset_decode=1 seed={seed}")


@pytest.mark.parametrize("W_dtype", ["uint4", "int4"])
@pytest.mark.parametrize("bucket", [1, 16])
def test_offset_decode_weight_error(W_dtype, bucket, rng, seed):
    """One-hot activation rows make each output one dequantized weight (one product, summed in f32, then
    rounded to f16). With offset_decode every weight lies within (B + z) s / 2048 (the f16 rounding of
    the group's addend -(B + z) s; B = 16 for uint4 with zeros z in [0, 16), 24 for int4 without) plus
    one f16 rounding of (w - z) s, for every code."""
    N, K, G = 256, 1024, 128
    zeros_given = W_dtype == "uint4"
    cfg = MatmulConfig(M=[bucket], N=N, K=K, W_dtype=W_dtype, with_scaling=True, with_zeros=zeros_given, group_size=G)
    op = Matmul(cfg, schedule=dict(scale_after=0, offset_decode=1))
    codes = torch.randint(0, 16, (N, K), generator=rng) - (0 if zeros_given else 8)
    scale = (torch.rand(N, K // G, generator=rng) * 0.05 + 1e-3).half()
    zeros = (torch.rand(N, K // G, generator=rng) * 16).half() if zeros_given else torch.zeros(N, K // G).half()
    extras = dict(scale=scale, zeros=zeros) if zeros_given else dict(scale=scale)
    W, *params = (t.cuda() for t in op.transform_weight(codes, **extras))
    given = dict(zip(extras, params))
    ks = torch.randperm(K, generator=rng)[:16]
    rows = torch.zeros(16, K, dtype=torch.float16)
    rows[torch.arange(16), ks] = 1
    out = _poisoned((16, N), "float16", "cuda")
    for first in range(0, 16, bucket):
        op(rows[first:first + bucket].cuda(), W, output=out[first:first + bucket], **given)
    sk, zk = scale.double()[:, ks // G], zeros.double()[:, ks // G]
    exact = ((codes[:, ks].double() - zk) * sk).T
    base = 16 if zeros_given else 24
    addend = (base + zk) * sk * 2.0 ** -11 * (1 + 2.0 ** -10)
    bound = (addend + exact.T.abs() * 2.0 ** -11 + 2.0 ** -25).T  # the addend's and the result's roundings
    err = (out.cpu().double() - exact).abs()
    assert not torch.isnan(err).any() and (err <= bound).all(), \
        f"seed={seed} {W_dtype} bucket={bucket}: worst excess {(err - bound).max().item():.3e} at {divmod(int((err - bound).argmax()), N)}"

def test_split_k_shared_by_layers_and_streams(rng, seed):
    """Two Matmuls of one config share a K-split kernel; on two streams they must not share its workspace."""
    cfg = MatmulConfig(M=[1, 16], N=512, K=2048, W_dtype="int4", with_scaling=True, group_size=128,
                       accum_dtype="float32")
    ops = [Matmul(cfg, schedule=dict(split_k=4)) for _ in range(2)]
    inputs = [random_matmul_inputs(cfg, 16, "cuda", rng, op=op) for op in ops]
    streams = [torch.cuda.Stream() for _ in ops]
    outs = [_poisoned((16, cfg.N), "float16", "cuda") for _ in ops]
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
    for _ in range(20):
        for op, inp, s, out in zip(ops, inputs, streams, outs):
            with torch.cuda.stream(s):
                inp.run(op, output=out)
    torch.cuda.synchronize()
    for inp, out in zip(inputs, outs):
        assert_close(out, inp.reference(), "float16", "float32", cfg.K, msg=f"seed={seed}")


LARGE_M_CASES = [
    dict(W_dtype="float16"),
    dict(W_dtype="int4", with_scaling=True, group_size=128, accum_dtype="float32", with_bias=True),
    dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="rescale"),
    dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
]


@pytest.mark.parametrize("wgmma", [{}, dict(wgmma=0)], ids=["default", "mma.sync"])
@pytest.mark.parametrize("fields", LARGE_M_CASES, ids=[f["W_dtype"] for f in LARGE_M_CASES])
def test_large_m_tiles(fields, wgmma, rng, seed):
    """The prefill schedules, m not a multiple of the tile and N not a multiple of 128: the defaults
    (on the H100 the wgmma kernel for float A) and the mma.sync kernel of the other targets (64 x 128
    tiles for bucket 256, 128 x 128 above)."""
    if wgmma and fields.get("A_dtype") == "int8":
        pytest.skip("int8 A always takes the mma.sync kernel")
    cfg = MatmulConfig(M=[256, 1024], N=384 + 8, K=1024, **fields)
    op = Matmul(cfg, schedule=wgmma)
    _check_each_m(op, cfg, (200, 300, 1024), rng, f"{fields} seed={seed}")


UNROLL_CASES = [
    (dict(W_dtype="float16"), dict(k_unroll=4), 1056),
    (dict(W_dtype="int8", accum_dtype="float32", with_bias=True), dict(k_unroll=2, block_m=32), 1056),
    (dict(W_dtype="int4", with_scaling=True, group_size=128), dict(k_unroll=2, split_k=2, block_m=32), 1152),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="quantized"),
     dict(k_unroll=2, warps_k=2, block_m=16), 1152),
    (dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), dict(k_unroll=8, block_m=32, stages=2), 1056),
]


@pytest.mark.parametrize("fields,schedule,K", UNROLL_CASES, ids=[f"{f['W_dtype']}-{s}" for f, s, _ in UNROLL_CASES])
def test_k_unroll(fields, schedule, K, rng, seed):
    """Several superblocks per warp iteration, with K not a whole number of iterations (the mma.sync
    kernel at every bucket: wgmma=0)."""
    cfg = MatmulConfig(M=[16, 128], N=200, K=K, **fields)
    op = Matmul(cfg, schedule=dict(schedule, wgmma=0))
    _check_each_m(op, cfg, (3, 16, 77), rng, f"{fields} {schedule} seed={seed}")


def test_split_k_in_cuda_graph(rng, seed):
    """A K-split forward captured in a CUDA graph (its workspace is made during capture) replays right,
    again and again (the locks go back to zero), on new inputs."""
    cfg = MatmulConfig(M=[16], N=384, K=4096, W_dtype="int4", with_scaling=True, group_size=128,
                       accum_dtype="float32")
    op = Matmul(cfg, schedule=dict(split_k=4))
    inp = random_matmul_inputs(cfg, 16, "cuda", rng, op=op)
    out = _poisoned((16, cfg.N), "float16", "cuda")
    inp.run(op, output=out)  # builds the kernel outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        inp.run(op, output=out)
    for replay in range(3):
        inp.A.copy_(torch.randn(inp.A.shape, generator=rng).to(inp.A.dtype).cuda())
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert_close(out, inp.reference(), "float16", "float32", cfg.K, msg=f"replay {replay} seed={seed}")


TILE_CASES = [
    dict(W_dtype="int4", with_scaling=True, group_size=128),
    dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="original"),
    dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
    dict(W_dtype="float16"),
]


@pytest.mark.parametrize("N", [8, 44, 392])
@pytest.mark.parametrize("fields", TILE_CASES, ids=[f["W_dtype"] for f in TILE_CASES])
def test_partial_row_tile(fields, N, rng, seed):
    """Weights are stored in tiles of 16 rows (lowbit.layout); N not a multiple of 16 leaves a last tile
    of N % 16 rows with its own superblock stride. The decode kernels (m <= 16) and the prefill kernel
    (m = 100: on the H100 the wgmma kernel for float A, whose 128-256 weight rows a block exceed N here)
    read it right."""
    cfg = MatmulConfig(M=[1, 16, 128], N=N, K=512, **fields)
    op = Matmul(cfg)
    for m in (1, 5, 16, 100):
        inp = random_matmul_inputs(cfg, m, "cuda", rng, op=op)
        out = _poisoned((m, N), cfg.out_dtype, "cuda")
        inp.run(op, output=out)
        assert_close(out, inp.reference(), cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{fields} N={N} m={m} seed={seed}")


WGMMA_CASES = [
    # (config fields, schedule overrides, K): every float-A weight format through the sm_90a warpgroup
    # kernel, zeros modes, bias, f16 accumulation and f32 output, K not a whole number of iterations
    (dict(W_dtype="float16"), {}, 1064),
    (dict(W_dtype="float16", with_bias=True, out_dtype="float32"), dict(k_unroll=4, block_m=64, stages=4), 1064),
    (dict(W_dtype="int4", with_scaling=True, group_size=128, accum_dtype="float32", with_bias=True), {}, 1152),
    (dict(W_dtype="int4", with_scaling=True, group_size=32), dict(block_m=256, warp_n_tiles=2, w_prefetch=1, warpgroups=2, stages=3), 1152),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, zeros_mode="original"), {}, 1152),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="rescale"),
     dict(stages=5, w_prefetch=3, warpgroups=2), 1152),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, zeros_mode="quantized"), {}, 1152),
    (dict(W_dtype="nf4"), {}, 1152),
    (dict(W_dtype="fp4_e2m1", with_scaling=True, group_size=128), {}, 1152),
    (dict(W_dtype="int8", accum_dtype="float32"), {}, 1088),
    (dict(W_dtype="uint2", with_scaling=True, with_zeros=True, group_size=128), {}, 1280),
    (dict(W_dtype="int1"), {}, 1536),
    (dict(W_dtype="float16", with_bias=True), dict(w_smem=1, stages=4), 1064),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="rescale"),
     dict(w_smem=1, warpgroups=2, stages=4, w_prefetch=2), 1152),
    (dict(W_dtype="nf4"), dict(w_smem=1), 1152),
]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the wgmma kernel needs an sm_90a GPU (H100)")
@pytest.mark.parametrize("fields,schedule,K", WGMMA_CASES, ids=[f"{f['W_dtype']}-{s}" for f, s, _ in WGMMA_CASES])
def test_wgmma_prefill(fields, schedule, K, rng, seed):
    """The warpgroup kernel (the sm_90a default above 256 rows): m not a multiple of the block's rows,
    N not a multiple of its weight rows, and an output not 16-byte aligned (a view one element into its
    buffer: the epilogue stores element by element there)."""
    cfg = MatmulConfig(M=[512], N=392, K=K, **fields)
    op = Matmul(cfg, schedule=dict(wgmma=1, **schedule))
    for m, offset in ((1, 0), (77, 1), (300, 0), (512, 0)):
        inp = random_matmul_inputs(cfg, m, "cuda", rng, op=op)
        buffer = _poisoned((m * cfg.N + offset,), cfg.out_dtype, "cuda")
        out = buffer[offset:].view(m, cfg.N)
        inp.run(op, output=out)
        assert_close(out, inp.reference(), cfg.out_dtype, cfg.accum_dtype, cfg.K,
                     msg=f"{fields} {schedule} m={m} output offset {offset} seed={seed}")
        if offset:
            assert buffer[:offset].isnan().all() if buffer.is_floating_point() else (buffer[:offset] == 77).all()


def test_chained_timing_replays_every_call(rng):
    """The benchmark's back-to-back decode timing captures every call of the chain in its graph: each
    call counts once, and the replays add whole chains (a graph missing a call would add fewer)."""
    from lowbit.bench import _chained_us

    cfg = MatmulConfig(M=[1], N=256, K=256, W_dtype="int4", with_scaling=True, group_size=128)
    op = Matmul(cfg)
    inp = random_matmul_inputs(cfg, 1, "cuda", rng, op=op)
    out = torch.empty(1, cfg.N, dtype=torch.float16, device="cuda")
    counter = torch.zeros((), dtype=torch.int64, device="cuda")
    items = [0, 1, 2]

    def call(_):
        inp.run(op, output=out)
        counter.add_(1)

    t = _chained_us(call, items)
    torch.cuda.synchronize()
    calls = int(counter)
    assert 0 < t < 1e4
    assert calls > 2 * len(items) and calls % (2 * len(items)) == 0, calls
    assert_close(out, inp.reference(), "float16", cfg.accum_dtype, cfg.K)


def test_alone_timing_excludes_the_spin():
    """The benchmark's alone timing measures the call between its events, not the spin that keeps the
    GPU busy before it: a call that waits 4x as long measures about 4x as long, and a tiny call far
    less than the spin."""
    from lowbit.bench import SPIN_CYCLES, median_us

    x = torch.zeros(1, device="cuda")
    tiny = median_us(lambda: x.add_(1), warmup_ms=5, rep_ms=20)
    short = median_us(lambda: torch.cuda._sleep(SPIN_CYCLES // 4), warmup_ms=5, rep_ms=20)
    long = median_us(lambda: torch.cuda._sleep(SPIN_CYCLES), warmup_ms=5, rep_ms=20)
    assert tiny < 0.5 * short, (tiny, short)
    assert 3.0 < long / short < 5.0, (short, long)


@pytest.mark.parametrize("group_size,K,expected", [(128, 2048, (2, 1)), (32, 4096, (4, 1))])
def test_decode_wide_n_default(group_size, K, expected, rng, seed):
    """The default m <= 16 schedule of a wide N (one wave of 2 K splits with one iteration of weights
    ahead; with small groups 4 splits) computes right, for a full and a partial row tile."""
    from lowbit.compiler.schedule import matmul_schedule

    cfg = MatmulConfig(M=[16], N=28672, K=K, W_dtype="int4", with_scaling=True, group_size=group_size)
    sched = matmul_schedule(cfg, 16, "sm_90a")
    assert (sched.split_k, sched.w_prefetch) == expected
    _check_each_m(Matmul(cfg), cfg, (16, 5), rng, f"seed={seed}")


DEFAULT_RULE_CASES = [  # (config fields, N, K, rows run (the first is the bucket), fields of its default schedule)
    # 16 rows: K split fewer ways, then the 3-stage weight ring (compiler.schedule._ring_split)
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 14336, 4096, (16, 9), dict(split_k=2, w_smem=1, stages=3)),
    (dict(W_dtype="uint4", with_scaling=True, group_size=128, with_bias=True), 11000, 4096, (16, 9),
     dict(split_k=3, w_smem=1, stages=3)),
    (dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 28672, 4096, (16, 9),
     dict(split_k=1, w_smem=1, stages=3)),
    (dict(W_dtype="int2"), 16384, 8064, (16, 9), dict(split_k=2, w_smem=1, stages=3)),
    (dict(W_dtype="float16"), 28680, 4096, (16, 9), dict(split_k=2, w_prefetch=2, w_smem=0)),  # wide N
    # 16 rows, 133-198 tiles: the most splits of one wave of 4 blocks an SM (compiler.schedule._one_wave_split)
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 17000, 5376, (16, 11),
     dict(split_k=3, w_prefetch=1, w_smem=0)),  # 133 tiles x 3, 42 superblocks
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, with_bias=True), 23000, 5248, (16, 5),
     dict(split_k=2, w_prefetch=1, w_smem=0)),  # 180 tiles x 2
    # 16 rows, above 264 tiles: one split; int4 g128 one iteration ahead where 4 blocks an SM take fewer
    # rounds than 3 (compiler.schedule._wider_than_wave_decode)
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 50816, 2048, (16, 7),
     dict(split_k=1, w_prefetch=1, w_smem=0)),  # 397 tiles: 4 an SM
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, with_bias=True), 34000, 4096, (16, 9),
     dict(split_k=1, w_prefetch=2, w_smem=0)),  # 266 tiles, the last partial
    (dict(W_dtype="float16"), 34000, 1024, (16, 3), dict(split_k=1, w_prefetch=2, w_smem=0)),  # 266 tiles
    # 16 rows: 4-bit long K in 8 splits, 2-bit weights split by 128 k (compiler.schedule._decode_split)
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128), 4104, 10240, (16, 9),
     dict(split_k=8, w_smem=1)),
    (dict(W_dtype="nf4"), 2000, 10304, (16, 11), dict(split_k=8, w_smem=1)),  # 80.5 superblocks
    (dict(W_dtype="nf4"), 3000, 8192, (16, 9), dict(split_k=8, w_smem=1)),  # 64 superblocks, 8 a split
    # nf4 and fp4: the least loaded split (_table_decode_split)
    (dict(W_dtype="nf4"), 1000, 6100, (16, 11), dict(split_k=6, w_smem=1)),  # 47.7 steps of 128 k
    (dict(W_dtype="fp4_e2m1"), 21900, 5100, (16, 7), dict(split_k=3, w_smem=0)),  # 172 tiles x 3
    (dict(W_dtype="nf4", with_bias=True), 31950, 3100, (16, 13), dict(split_k=1, w_smem=1)),  # 250 tiles, one split
    (dict(W_dtype="fp4_e2m1", with_scaling=True, group_size=128), 11000, 8192, (16, 5),
     dict(split_k=3, w_smem=1)),  # 86 tiles x 3
    (dict(W_dtype="nf4", with_scaling=True, group_size=128, with_bias=True), 5100, 13824, (16, 9),
     dict(split_k=6, w_smem=1)),  # 108 superblocks in 6 splits
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128, with_bias=True), 6200, 8320, (16, 3),
     dict(split_k=8, w_smem=0)),  # 49 tiles x 8 = 392 blocks: one wave, no ring
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 9000, 13952, (16, 13),
     dict(split_k=3, w_smem=1, stages=3)),  # the ring split: 3 splits of 37 superblocks, 213 blocks
    (dict(W_dtype="int2"), 4000, 4096, (16, 9), dict(split_k=4, w_smem=1)),
    (dict(W_dtype="int2", with_scaling=True, group_size=128), 4000, 3968, (16, 5), dict(split_k=3, w_smem=0)),
    (dict(W_dtype="int1"), 2000, 4096, (16, 7), dict(split_k=4, w_smem=1)),
    # 17-64 rows: 128-column blocks with K split to fill the SMs, or the warpgroup kernel where N covers
    # every SM (compiler.schedule._small_m_split)
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 8200, 4096, (64, 40), dict(block_m=64, split_k=4, wgmma=0)),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128), 4104, 3968, (32, 17),
     dict(block_m=32, split_k=3, wgmma=0)),
    # 4-bit float A: the least loaded split within one wave
    (dict(W_dtype="int4", with_scaling=True, group_size=128), 6100, 8192, (64, 37), dict(block_m=64, split_k=8, wgmma=0)),
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128), 12200, 5120, (48, 19),
     dict(block_m=64, split_k=4, wgmma=0)),  # 96 tiles x 4 = 384 blocks, 10 steps of 128 k a split
    (dict(W_dtype="fp4_e2m1", with_scaling=True, group_size=128, with_bias=True), 7000, 11008, (32, 21),
     dict(block_m=32, split_k=6, wgmma=0)),  # 86 steps in 6 splits, the last one short
    (dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 4096, 14336, (64, 33),
     dict(block_m=64, split_k=8, wgmma=0)),
    (dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 2056, 8192, (64, 40),
     dict(block_m=64, split_k=6, wgmma=0)),  # 64 steps of 128 k in 6 splits, 17 tiles
    (dict(W_dtype="int2", with_bias=True), 1000, 4096, (64, 33), dict(block_m=32, split_k=4, wgmma=0)),
    (dict(W_dtype="int2"), 8200, 8192, (64, 40), dict(block_m=32, split_k=2, wgmma=0)),  # 65 tiles x 2 row blocks
    (dict(W_dtype="int2"), 6100, 8192, (64, 63), dict(block_m=32, split_k=4, wgmma=0)),  # 48 x 2 x 4 = 384 blocks
    (dict(W_dtype="int1"), 4000, 4096, (64, 50), dict(block_m=16, split_k=2, w_smem=1)),  # 32 tiles x 4 row blocks
    (dict(W_dtype="int1"), 2000, 4096, (32, 20), dict(block_m=16, split_k=4, w_smem=1)),
    (dict(W_dtype="int1"), 14336, 4096, (64, 33), dict(block_m=16, split_k=1, w_smem=0)),  # 448 blocks: no ring
    (dict(W_dtype="int1", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 4000, 4096, (64, 45),
     dict(block_m=32, split_k=4, wgmma=0)),  # 32-row blocks, 8 steps of 128 k a split
    (dict(W_dtype="float16", with_bias=True), 2056, 2048, (48,), dict(block_m=64, split_k=2, wgmma=0)),
    (dict(W_dtype="nf4", with_scaling=True, group_size=128), 16904, 1024, (64, 35),
     dict(block_m=64, split_k=1, wgmma=1, warp_n_tiles=2)),  # 133 tiles: 64 x 64 (_prefill_wgmma_tile)
    (dict(W_dtype="int2", with_bias=True), 17000, 1280, (64, 47), dict(block_m=64, wgmma=1, warp_n_tiles=2, warpgroups=2)),
    # 65-256 rows (_prefill_wgmma_tile, _sync_128_rows and the mma.sync K split): the tile by the grid
    # of 64 x 128 default tiles
    (dict(W_dtype="int4", with_scaling=True, group_size=128, with_bias=True), 12792, 1024, (256, 200),
     dict(block_m=128, warp_n_tiles=4, warpgroups=1, wgmma=1)),  # 100 tiles x 4 = 400 blocks
    (dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128), 4220, 1152, (256, 131),
     dict(block_m=128, warp_n_tiles=2, warpgroups=2, wgmma=1)),  # 33 x 4 = 132: two warpgroups
    (dict(W_dtype="fp4_e2m1", with_scaling=True, group_size=128), 8440, 1024, (256, 255),
     dict(block_m=128, warp_n_tiles=4, warpgroups=1, wgmma=1)),  # 66 x 4 = 264
    (dict(W_dtype="nf4"), 4000, 1024, (256, 77), dict(block_m=64, warp_n_tiles=2, warpgroups=1, wgmma=1)),
    (dict(W_dtype="int2"), 8200, 1280, (256, 150), dict(block_m=64, warp_n_tiles=2, warpgroups=2, wgmma=1)),
    (dict(W_dtype="float16", with_bias=True), 12800, 1064, (256, 180), dict(block_m=128, warp_n_tiles=2, warpgroups=2)),
    (dict(W_dtype="float16"), 2056, 1064, (192, 100), dict(block_m=64, stages=4, wgmma=1)),
    (dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 16900, 1024, (128, 70),
     dict(block_m=128, split_k=1, wgmma=0)),  # 133 tiles of 128 rows
    (dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), 4000, 2048, (256, 99),
     dict(block_m=64, split_k=2, wgmma=0)),  # 32 x 4 = 128 blocks: K split in 2
]


@pytest.mark.parametrize("fields,N,K,ms,expected", DEFAULT_RULE_CASES,
                         ids=[f"{c[0]['W_dtype']}-{c[1]}x{c[2]}-m{c[3][0]}" for c in DEFAULT_RULE_CASES])
def test_default_rule_schedules(fields, N, K, ms, expected, rng, seed):
    """The defaults that the 16-row split rules (_decode_split, the ring split), the 17-64 row rules and
    the 65-256 row tiles choose compute right, with partial row tiles, partial splits and K not a whole
    number of superblocks."""
    from lowbit.compiler.schedule import matmul_schedule

    cfg = MatmulConfig(M=[ms[0]], N=N, K=K, **fields)
    sched = matmul_schedule(cfg, ms[0], "sm_90a")
    assert {k: getattr(sched, k) for k in expected} == expected
    _check_each_m(Matmul(cfg), cfg, ms, rng, f"{fields} seed={seed}")
