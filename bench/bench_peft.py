# `make bench-peft`: peft.cpp against PEFT (transformers + torch of the project's .venv, the same libtorch)
# on the same machine, model, token batches and thread counts, interleaved A B B A; prints one table.
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# SmolLM2-135M's shape (random weights: only the shape matters for speed).
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor(), set()
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = re.search(r"flags\s*:\s*(.*)", text)
    return (name.group(1).strip() if name else "unknown"), set(flags.group(1).split() if flags else [])


def make_model(out_dir):
    """The random SmolLM2-shaped Llama, written once as a Hugging Face directory both sides load."""
    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        return
    import transformers
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SMOLLM2)
    model = transformers.LlamaForCausalLM(config)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)


def make_tokens(path, batch, seq, steps):
    import safetensors.torch
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SMOLLM2["vocab_size"], (steps, batch, seq), generator=g, dtype=torch.int64)
    safetensors.torch.save_file({"input_ids": ids}, path)


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    return 0.0


def run_python_side(args):
    """PEFT's side in this process: the loop a user writes with PEFT (one optimizer step per batch)."""
    import peft
    import safetensors.torch
    import transformers
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = transformers.LlamaForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa")
    torch.manual_seed(0)
    if args.method == "lora":
        config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0)
    else:
        config = peft.AdaLoraConfig(init_r=12, target_r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0,
                                    tinit=args.warmup, tfinal=100, deltaT=10, total_step=1000)
    model = peft.get_peft_model(model, config)
    for p in model.parameters():  # adapters, optimizer and allocator state in float32, as on our side
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = safetensors.torch.load_file(args.tokens)["input_ids"]
    step_s, allocate_s, losses = [], [], []
    for step in range(args.warmup + args.steps + (1 if args.profile_file else 0)):
        x = ids[step % ids.shape[0]]
        prof = None
        if step == args.warmup + args.steps:  # one more step, under the profiler, untimed
            x = ids[0]
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        t0 = time.perf_counter()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if args.method == "adalora":
            model.base_model.update_and_allocate(step)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        t3 = time.perf_counter()
        if prof is not None:
            prof.__exit__(None, None, None)
            prof.export_chrome_trace(args.profile_file)
            continue
        if step < args.warmup:
            continue
        step_s.append(t3 - t0)
        allocate_s.append(t2 - t1)
        losses.append(out.loss.item())
    print(json.dumps({"side": "PEFT", "method": args.method, "dtype": args.dtype, "threads": torch.get_num_threads(),
                      "step_s": step_s, "allocate_s": allocate_s, "loss": losses, "peak_rss_bytes": peak_rss_bytes()}))


def matmul_limit_s(batch, seq, threads, dtype):
    """The step's own matrix products timed alone (the honest ceiling of a frozen-base step): every
    projection forward (x W^T) and its input gradient (g W), the tied lm_head both ways, and attention's
    Q K^T and P V forward and backward (2 products each way), at this row's shapes."""
    torch.set_num_threads(threads)
    c = SMOLLM2
    n = batch * seq
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    projections = [(c["hidden_size"], c["hidden_size"]), (c["hidden_size"], kv), (c["hidden_size"], kv),
                   (c["hidden_size"], c["hidden_size"]), (c["hidden_size"], c["intermediate_size"]),
                   (c["hidden_size"], c["intermediate_size"]), (c["intermediate_size"], c["hidden_size"])]

    def timed(a_shape, b_shape, reps=3):
        a, b = torch.randn(*a_shape, dtype=dtype), torch.randn(*b_shape, dtype=dtype)
        torch.matmul(a, b)
        best = 1e30
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        return best

    layer = 0.0
    for i, o in projections:
        layer += timed((n, i), (i, o)) + timed((n, o), (o, i))
    heads = batch * c["num_attention_heads"]
    attn = timed((heads, seq, head_dim), (heads, head_dim, seq)) + timed((heads, seq, seq), (heads, seq, head_dim))
    layer += 3 * attn  # forward, and two products per forward product in backward
    head = timed((n, c["hidden_size"]), (c["hidden_size"], c["vocab_size"])) * 2
    flops = 0.0
    for i, o in projections:
        flops += 2 * 2 * n * i * o
    flops = flops * c["num_hidden_layers"] + 2 * 2 * n * c["hidden_size"] * c["vocab_size"]
    flops += c["num_hidden_layers"] * 3 * 2 * 2 * heads * seq * seq * head_dim
    return layer * c["num_hidden_layers"] + head, flops


def mm2048_flops(threads, dtype):
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    torch.mm(a, b)
    best = 1e30
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best


def gemm_limits(batch, seq, threads):
    """`peft_bench gemm`: the step's float32 products timed alone on each GEMM backend of peft.cpp
    (libtorch's BLAS, OpenBLAS) and which one is in effect; None where the program prints nothing."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PEFT_NUM_THREADS=str(threads),
               PEFT_GEMM_SHAPE=f"{batch}x{seq}")
    out = subprocess.run([os.path.join(ROOT, "build", "peft_bench"), "gemm"], env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_side(side, row, model, tokens, warmup, steps, profile=None):
    method, dtype, batch, seq, threads = row
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PEFT_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if side == "peft.cpp":
        env.update(PEFT_STEP_MODEL=model, PEFT_STEP_TOKENS=tokens, PEFT_STEP_METHOD=method, PEFT_STEP_DTYPE=dtype,
                   PEFT_STEP_WARMUP=str(warmup), PEFT_STEP_STEPS=str(steps), PEFT_STEP_PROFILE=profile or "")
        cmd = [os.path.join(ROOT, "build", "peft_bench"), "peft-step"]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--python-side", "--model", model, "--tokens", tokens,
               "--method", method, "--dtype", dtype, "--threads", str(threads), "--warmup", str(warmup),
               "--steps", str(steps)] + (["--profile-file", profile] if profile else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench-peft: {side} failed for {row}:\n{out.stdout}\n{out.stderr}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"bench-peft: no result from {side}:\n{out.stdout}")


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--python-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model"), p.add_argument("--tokens")
    p.add_argument("--method", default="lora"), p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the measured ones")
    p.add_argument("--steps", type=int, default=4, help="measured steps per process")
    p.add_argument("--rounds", type=int, default=2, help="A B, B A, ... rounds per row")
    p.add_argument("--rows", default="all",
                   help="'all', or comma-separated METHOD:DTYPE:BATCHxSEQ:THREADS, e.g. lora:float32:4x256:2")
    p.add_argument("--profile", action="store_true",
                   help="after each row, one more step of each side under the profiler: self time per operator")
    p.add_argument("--profile-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.python_side:
        return run_python_side(args)

    cache = os.path.join(ROOT, ".cache", "bench-peft")
    model = os.path.join(cache, "smollm2-shape")
    make_model(model)
    name, flags = cpu_model()
    native_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    if args.rows == "all":
        rows = [(m, d, b, s, t) for d in ("float32", "bfloat16") for (b, s) in ((4, 256), (2, 128))
                for t in (1, 2) for m in ("lora", "adalora")]
    else:
        rows = []
        for r in args.rows.split(","):
            m, d, bs, t = r.split(":")
            b, s = bs.split("x")
            rows.append((m, d, int(b), int(s), int(t)))
    print(f"bench-peft: {name}; {os.cpu_count()} CPUs; native bf16: {'yes' if native_bf16 else 'no'}; "
          f"torch {torch.__version__}; {args.warmup} warm-up + {args.steps} measured steps per process, "
          f"{args.rounds} rounds A B / B A per row")
    print(f"command: .venv/bin/python bench/bench_peft.py --rows {args.rows} --steps {args.steps} --rounds {args.rounds}"
          + (" --profile" if args.profile else ""))
    header = ("| method | dtype | batch | threads | peft.cpp ms/step (median, mean) | PEFT ms/step (median, mean) | "
              "ratio | tokens/s ours, PEFT | update_and_allocate ms ours, PEFT | peak RSS GB ours, PEFT (ratio) | "
              "step / 2048^3 rate | shapes alone on torch / step | shapes alone on peft.cpp's GEMM / step |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    limits = {}
    profiles = []
    for row in rows:
        method, dtype, batch, seq, threads = row
        if dtype == "bfloat16" and not native_bf16:
            print(f"| {method} | bf16 | {batch}x{seq} | {threads} | not run: no native bf16 on this CPU | | | | | | | | |")
            continue
        tokens = os.path.join(cache, f"tokens-{batch}x{seq}.safetensors")
        if not os.path.exists(tokens):
            make_tokens(tokens, batch, seq, 8)
        res = {"peft.cpp": [], "PEFT": []}
        for r in range(args.rounds):
            order = ("peft.cpp", "PEFT") if r % 2 == 0 else ("PEFT", "peft.cpp")
            for side in order:
                res[side].append(run_side(side, row, model, tokens, args.warmup, args.steps))
        ours = [s for x in res["peft.cpp"] for s in x["step_s"]]
        theirs = [s for x in res["PEFT"] for s in x["step_s"]]
        ua_ours = [s for x in res["peft.cpp"] for s in x["allocate_s"]]
        ua_theirs = [s for x in res["PEFT"] for s in x["allocate_s"]]
        rss_ours = max(x["peak_rss_bytes"] for x in res["peft.cpp"])
        rss_theirs = max(x["peak_rss_bytes"] for x in res["PEFT"])
        key = (batch, seq, threads, dtype)
        if key not in limits:
            tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
            gemm = gemm_limits(batch, seq, threads) if dtype == "float32" else None
            ours_limit = gemm[gemm["in_effect"]]["step_products_s"] if gemm else None
            limits[key] = matmul_limit_s(batch, seq, threads, tdtype) + (mm2048_flops(threads, tdtype), ours_limit)
        limit_s, flops, mm_rate, ours_limit_s = limits[key]
        mo = median(ours)
        ua = (f"{1e3 * sum(ua_ours) / len(ua_ours):.1f}, {1e3 * sum(ua_theirs) / len(ua_theirs):.1f}"
              if method == "adalora" else "-")
        print(f"| {method} | {dtype} | {batch}x{seq} | {threads} | {1e3 * mo:.0f}, {1e3 * sum(ours) / len(ours):.0f} | "
              f"{1e3 * median(theirs):.0f}, {1e3 * sum(theirs) / len(theirs):.0f} | {mo / median(theirs):.2f} | "
              f"{batch * seq / mo:.0f}, {batch * seq / median(theirs):.0f} | {ua} | "
              f"{rss_ours / 1e9:.2f}, {rss_theirs / 1e9:.2f} ({rss_ours / rss_theirs:.2f}) | "
              f"{flops / mo / mm_rate:.2f} | {limit_s / mo:.2f} | "
              f"{f'{ours_limit_s / mo:.2f}' if ours_limit_s else '-'} |", flush=True)
        if args.profile:
            name = f"{method}-{dtype}-{batch}x{seq}-{threads}"
            traces = {side: os.path.join(cache, f"profile-{name}-{side}.json") for side in ("peft.cpp", "PEFT")}
            for side, trace in traces.items():
                run_side(side, row, model, tokens, 1, 0, trace)
            profiles.append((name, {side: self_times(trace) for side, trace in traces.items()}))
    for name, prof in profiles:
        print_profile(name, prof)


def self_times(trace):
    """Self time (s) per operator over one step of a chrome trace: each event's duration less that of the
    events nested in it on the same thread."""
    with open(trace) as f:
        data = json.load(f)
    events = [e for e in (data["traceEvents"] if isinstance(data, dict) else data)
              if e.get("ph") == "X" and e.get("cat", "cpu_op") in ("cpu_op", "operator", "")]
    out = {}
    for tid in {e.get("tid") for e in events}:
        stack = []  # (end, name, child time)
        for e in sorted((e for e in events if e.get("tid") == tid), key=lambda e: (float(e["ts"]), -float(e["dur"]))):
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= start:
                end, n, child, d = stack.pop()
                out[n] = out.get(n, 0.0) + (d - child) * 1e-6
            if stack:
                stack[-1][2] += dur
            stack.append([start + dur, e["name"], 0.0, dur])
        while stack:
            end, n, child, d = stack.pop()
            out[n] = out.get(n, 0.0) + (d - child) * 1e-6
    return out


def print_profile(name, prof):
    ours, theirs = prof["peft.cpp"], prof["PEFT"]
    total_o, total_t = sum(ours.values()), sum(theirs.values())
    print(f"\nprofile {name}: self time per operator over one untimed step under the profiler: "
          f"peft.cpp {total_o:.2f} s, PEFT {total_t:.2f} s")
    print("| operator | peft.cpp ms | % | PEFT ms | % |")
    print("|---|---:|---:|---:|---:|")
    top = sorted(set(ours) | set(theirs), key=lambda k: -max(ours.get(k, 0), theirs.get(k, 0)))[:15]
    for k in top:
        o, t = ours.get(k, 0.0), theirs.get(k, 0.0)
        print(f"| {k} | {1e3 * o:.0f} | {100 * o / total_o:.1f} | {1e3 * t:.0f} | {100 * t / total_t:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
