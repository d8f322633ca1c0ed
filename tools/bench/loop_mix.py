#!/usr/bin/env python3
"""Cycles per `vpmaddubsw` of the AVX2 ternary kernel's inner loop and of simpler instruction mixes.

    python3 tools/bench/loop_mix.py [GHZ]

Writes a C file of inline-assembly loops to a temporary directory, builds it with gcc and prints,
for each loop, the cycles per `vpmaddubsw` at GHZ (default: measured with a chain of dependent
integer adds, one per cycle). Each loop body is straight-line code over registers and L1-resident
data, so the figures are the core's throughput for that mix, the ceiling a real kernel can reach:

- `maddubs`: independent `vpmaddubsw` only.
- `maddubs+add`: each product added into one of eight i16 accumulators (the kernel's arithmetic).
- `maddubs+add, load each 1/2/4`: the same with a `vpbroadcastd` of an L1 quad feeding every
  product, every second or every fourth (what separate loads cost beside the arithmetic).
- `kernel, rows apart`: the kernel's loop for 8 tokens against one 32-byte half: per token four
  `vpbroadcastd` of activation quads, four `vpmaddubsw`, a pairwise sum and the add into the token's
  accumulator; the 8 tokens' quads 2560 bytes apart (one activation row each, the 2B-4T width).
- `kernel, grouped`: the same with the 8 tokens' quads side by side (16 bytes apart).
- `kernel, grouped, unpacking`: the loop as the compiler builds it for `tiled` (checked with
  `objdump`): each iteration also loads the half's 32 code bytes and splits them into its four
  planes (three shifts, four masks), and three registers hold the broadcasts and products.
- `both halves, 2 tokens`: both halves' planes in registers, each broadcast quad multiplied into
  both (half the broadcasts), 2 tokens' accumulators in registers.
- `both halves, memory sums`: the same for 8 tokens whose i16 sums live in L1 (loaded, added to and
  stored once per half), as a loop over all of a prompt's tokens per block would keep them.
- `rows broadcast, R x V`: the roles turned around, for R rows and 8V tokens (R · V = 8
  accumulators): per plane, V loads of 8 tokens' activation quads side by side, then for each row a
  `vpbroadcastd` of its code quad from unpacked planes in L1, V `vpmaddubsw` and V adds.
"""

import os
import subprocess
import sys
import tempfile

HEADER = """#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static char buf[1 << 17] __attribute__((aligned(64)));
"""


def loop(name, body, per_iter, a_step=0, clobbers=""):
    asm = "\n".join(f'"{line}\\n\\t"' for line in body)
    clobbers = clobbers or ",".join(f'"xmm{i}"' for i in range(16))
    return f"""
static double {name}(long n) {{
  const char *a = buf + 8192;
  double t = now();
  for (long i = 0; i < n; i++) {{
    __asm__ volatile({asm} :: [a]"r"(a + ((i * {a_step}) & 2047)) : "memory", {clobbers});
  }}
  return (now() - t) / (n * {per_iter}.0);
}}"""


def maddubs_only():
    return [f"vpmaddubsw %%ymm{8 + i % 4}, %%ymm{12 + i % 4}, %%ymm{i % 8}" for i in range(32)]


def maddubs_add(load_every=0):
    """Each product added into one of eight accumulators; with `load_every` > 0, a `vpbroadcastd`
    of an L1 quad feeds every `load_every`-th product and the ones after it."""
    body = []
    for i in range(32):
        quad = 12 + (i // max(load_every, 1)) % 2
        if load_every and i % load_every == 0:
            body.append(f"vpbroadcastd {(4 * i) % 256}(%[a]), %%ymm{quad}")
        body.append(f"vpmaddubsw %%ymm{8 + i % 4}, %%ymm{quad}, %%ymm{14 + i % 2}")
        body.append(f"vpaddw %%ymm{14 + i % 2}, %%ymm{i % 8}, %%ymm{i % 8}")
    return body


def quad_products(acts, planes, products):
    """Four `vpmaddubsw` (plane p times the broadcast quad in register acts + p, into register
    products + p), summed pairwise into register `products`."""
    body = [f"vpmaddubsw %%ymm{acts + p}, %%ymm{planes + p}, %%ymm{products + p}" for p in range(4)]
    s = products
    return body + [
        f"vpaddw %%ymm{s}, %%ymm{s + 1}, %%ymm{s}",
        f"vpaddw %%ymm{s + 2}, %%ymm{s + 3}, %%ymm{s + 2}",
        f"vpaddw %%ymm{s}, %%ymm{s + 2}, %%ymm{s}",
    ]


def kernel(token_stride):
    # ymm8-11: the half's four code planes; ymm0-7: the tokens' accumulators.
    body = []
    for m in range(8):
        body += [f"vpbroadcastd {m * token_stride + 4 * p}(%[a]), %%ymm{12 + p}" for p in range(4)]
        body += quad_products(12, 8, 12)
        body.append(f"vpaddw %%ymm12, %%ymm{m}, %%ymm{m}")
    return body


def kernel_unpacking():
    # ymm8-11: the planes, unpacked from 32 code bytes 4 KiB below the quads with the mask in ymm15;
    # ymm12-14: broadcasts and products; ymm0-7: the tokens' accumulators.
    body = [
        "vmovdqu -4096(%[a]), %%ymm11",
        "vpsrlw $2, %%ymm11, %%ymm9",
        "vpsrlw $4, %%ymm11, %%ymm10",
        "vpand %%ymm11, %%ymm15, %%ymm8",
        "vpsrlw $6, %%ymm11, %%ymm11",
        "vpand %%ymm9, %%ymm15, %%ymm9",
        "vpand %%ymm10, %%ymm15, %%ymm10",
        "vpand %%ymm11, %%ymm15, %%ymm11",
    ]
    for m in range(8):
        a = [f"{m * 16 + 4 * p}(%[a])" for p in range(4)]
        body += [
            f"vpbroadcastd {a[0]}, %%ymm12",
            f"vpbroadcastd {a[1]}, %%ymm13",
            "vpmaddubsw %%ymm12, %%ymm8, %%ymm12",
            "vpmaddubsw %%ymm13, %%ymm9, %%ymm13",
            "vpaddw %%ymm12, %%ymm13, %%ymm12",
            f"vpbroadcastd {a[2]}, %%ymm13",
            f"vpbroadcastd {a[3]}, %%ymm14",
            "vpmaddubsw %%ymm13, %%ymm10, %%ymm13",
            "vpmaddubsw %%ymm14, %%ymm11, %%ymm14",
            "vpaddw %%ymm13, %%ymm14, %%ymm13",
            "vpaddw %%ymm12, %%ymm13, %%ymm12",
            f"vpaddw %%ymm12, %%ymm{m}, %%ymm{m}",
        ]
    return body


def both_halves_registers():
    # ymm8-15: both halves' planes; ymm4-7: 2 tokens' accumulators per half; ymm0: a broadcast quad.
    body = []
    for rep in range(4):
        for m in range(2):
            for p in range(4):
                body.append(f"vpbroadcastd {(rep * 2 + m) * 16 + 4 * p}(%[a]), %%ymm0")
                for h in range(2):
                    body.append(f"vpmaddubsw %%ymm0, %%ymm{8 + 4 * h + p}, %%ymm{2 + h}")
                    body.append(f"vpaddw %%ymm{2 + h}, %%ymm{4 + 2 * m + h}, %%ymm{4 + 2 * m + h}")
    return body


def both_halves_memory():
    # ymm8-15: both halves' planes; per token four broadcasts (ymm0-3), eight products (ymm4-7)
    # summed pairwise and added into the token's sum for each half, kept 4 KiB below the quads.
    body = []
    for m in range(8):
        body += [f"vpbroadcastd {m * 16 + 4 * p}(%[a]), %%ymm{p}" for p in range(4)]
        for h in range(2):
            sums = -4096 + (m * 2 + h) * 32
            body += quad_products(0, 8 + 4 * h, 4)
            body += [
                f"vpaddw {sums}(%[a]), %%ymm4, %%ymm4",
                f"vmovdqa %%ymm4, {sums}(%[a])",
            ]
    return body


def rows_broadcast(rows, vecs):
    # ymm0..: the accumulators (row-major); then the activation vectors, the broadcast quad and the
    # products in the registers left.
    acts = rows * vecs
    quad = acts + vecs
    products = quad + 1
    body = []
    for p in range(4):
        body += [f"vmovdqu {(p * vecs + v) * 32}(%[a]), %%ymm{acts + v}" for v in range(vecs)]
        for r in range(rows):
            body.append(f"vpbroadcastd {-4096 + p * 32 + 4 * r}(%[a]), %%ymm{quad}")
            for v in range(vecs):
                t = products + v % (16 - products)
                body.append(f"vpmaddubsw %%ymm{acts + v}, %%ymm{quad}, %%ymm{t}")
                body.append(f"vpaddw %%ymm{t}, %%ymm{r * vecs + v}, %%ymm{r * vecs + v}")
    return body


def main():
    # (name, body, bytes the activations move per iteration, vpmaddubsw per iteration)
    loops = [
        ("maddubs", maddubs_only(), 0, 32),
        ("maddubs+add", maddubs_add(), 0, 32),
        ("maddubs+add, load each 1", maddubs_add(1), 0, 32),
        ("maddubs+add, load each 2", maddubs_add(2), 0, 32),
        ("maddubs+add, load each 4", maddubs_add(4), 0, 32),
        ("kernel, rows apart", kernel(2560), 16, 32),
        ("kernel, grouped", kernel(16), 128, 32),
        ("kernel, grouped, unpacking", kernel_unpacking(), 128, 32),
        ("both halves, 2 tokens", both_halves_registers(), 0, 64),
        ("both halves, memory sums", both_halves_memory(), 0, 64),
        ("rows broadcast, 8 x 1", rows_broadcast(8, 1), 128, 32),
        ("rows broadcast, 4 x 2", rows_broadcast(4, 2), 128, 32),
        ("rows broadcast, 2 x 4", rows_broadcast(2, 4), 128, 32),
    ]
    src = HEADER
    src += loop("one_add", ["add $1, %%rcx"] * 32, 32, clobbers='"rcx"')
    for i, (_, body, step, count) in enumerate(loops):
        src += loop(f"mix{i}", body, count, step)
    # Written first: a buffer never written reads the kernel's shared zero page through every one of
    # its virtual pages, which made loads that stride across pages look slow.
    src += "int main(void) {\n  for (int i = 0; i < (int)sizeof buf; i++) buf[i] = (char)(i * 37 + 11);\n"
    src += "  long n = 50000000;\n  printf(\"%.4f\\n\", one_add(n) * 1e9);\n"
    for i in range(len(loops)):
        src += f'  printf("%.4f\\n", mix{i}(n) * 1e9);\n'
    src += "  return 0;\n}\n"
    with tempfile.TemporaryDirectory() as d:
        c, exe = os.path.join(d, "mix.c"), os.path.join(d, "mix")
        with open(c, "w") as f:
            f.write(src)
        subprocess.run(["gcc", "-O2", c, "-o", exe], check=True)
        ns = [float(v) for v in subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split()]
    ghz = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0 / ns[0]
    print(f"clock: {ghz:.2f} GHz" + (" (given)" if len(sys.argv) > 1 else " (measured: one dependent add per cycle)"))
    for (name, _, _, _), t in zip(loops, ns[1:]):
        print(f"{name:28} {t * ghz:.3f} cycles per vpmaddubsw")


if __name__ == "__main__":
    main()
