#!/usr/bin/env python3
"""Independent reader/checker for the `.bitnet` format, version 1.0.

Written from format-spec/SPEC.md ALONE (no project source code was read) as an
independent check that the specification is sufficient to implement a reader.
Standard library only.

  read_bitnet.py FILE [--golden golden.json] [--vectors DIR]

Exits 0 if FILE is valid (and everything matches), 1 on any rejection or
mismatch; a rejection names the spec rule that failed.
"""
import argparse, glob, json, math, os, re, struct, sys, zlib

MAGIC = b"\x89BITNET\n"
MAX_HEADER = 268435456
U32, U64 = 2**32 - 1, 2**64 - 1


class Reject(Exception):
    pass


def need(cond, rule):
    if not cond:
        raise Reject(rule)


def align64(n):
    return (n + 63) // 64 * 64


# ---------------------------------------------------------------- header JSON
def is_int(v, hi=U64, lo=0):
    return type(v) is int and lo <= v <= hi


def is_real(v):
    return type(v) in (int, float) and math.isfinite(v)


def no_dups(pairs):
    keys = [k for k, _ in pairs]
    need(len(keys) == len(set(keys)), "§3 duplicate member name in a JSON object")
    return dict(pairs)


def bad_const(c):
    raise Reject(f"§3 header is not RFC 8259 JSON ({c})")


def check_model(m):
    need(isinstance(m, dict), "§3.1 model must be an object")
    need(isinstance(m.get("family"), str), "§3.1 model.family missing/not a string")
    for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
              "head_dim", "vocab_size", "context_length"):
        need(is_int(m.get(k), U32, 1), f"§3.1 model.{k} missing or not a u32 > 0")
    need(m["num_heads"] % m["num_kv_heads"] == 0, "§3.1 num_heads not a multiple of num_kv_heads")
    need(m["head_dim"] % 2 == 0, "§3.1 head_dim not even")
    for k in ("rope_theta", "rms_norm_eps"):
        need(is_real(m.get(k)) and m[k] > 0, f"§3.1 model.{k} missing or not a real > 0")
    rs = m.get("rope_scaling")
    if rs is not None:
        need(isinstance(rs, dict), "§3.1 rope_scaling must be an object or null")
        fields = {"linear": ("factor",),
                  "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_context_length")}
        need(rs.get("kind") in fields, "§3.1 rope_scaling.kind unknown")
        for f in fields[rs["kind"]]:
            need(is_real(rs.get(f)), f"§3.1 rope_scaling.{f} missing or not a number")
    need(m.get("activation") in ("relu2", "silu"), "§3.1 model.activation not relu2/silu")
    for k in ("sub_norms", "tied_embeddings"):
        need(type(m.get(k)) is bool, f"§3.1 model.{k} missing or not a bool")
    for k in ("attention_bias", "qk_norm"):
        need(m.get(k) is None or type(m[k]) is bool, f"§3.1 model.{k} not a bool")


def check_optional_sections(h):
    t = h.get("tokenizer")
    if t is not None:
        need(isinstance(t, dict) and isinstance(t.get("tokenizer_json"), dict), "§3.2 tokenizer_json")
        need(isinstance(t.get("eos_token_ids"), list) and all(is_int(x, U32) for x in t["eos_token_ids"]),
             "§3.2 eos_token_ids")
        need(type(t.get("add_bos_token")) is bool, "§3.2 add_bos_token")
        for k in ("bos_token_id", "pad_token_id"):
            need(k not in t or is_int(t[k], U32), f"§3.2 {k}")
        need("chat_template" not in t or isinstance(t["chat_template"], str), "§3.2 chat_template")
    g = h.get("generation", {})
    need(isinstance(g, dict), "§3.3 generation must be an object")
    for k in ("top_k", "max_new_tokens"):
        need(k not in g or is_int(g[k], U32), f"§3.3 generation.{k}")
    for k in ("temperature", "top_p", "min_p", "repetition_penalty"):
        need(k not in g or is_real(g[k]), f"§3.3 generation.{k}")
    p = h.get("provenance")
    need(isinstance(p, dict), "§3 provenance missing")
    need(isinstance(p.get("source"), dict) and p["source"].get("kind") in
         ("hugging_face", "directory", "gguf", "synthetic"), "§3.4 provenance.source")
    need(isinstance(p.get("files"), list), "§3.4 provenance.files")
    for f in p["files"]:
        need(isinstance(f, dict) and isinstance(f.get("name"), str) and is_int(f.get("bytes"))
             and re.fullmatch(r"[0-9a-f]{64}", str(f.get("sha256"))), "§3.4 provenance.files entry")
    need(isinstance(p.get("converter"), str), "§3.4 provenance.converter")
    need(isinstance(p.get("options"), dict), "§3.4 provenance.options")


LAYOUTS = {
    "i2s": {"block": (128, 64), "code": ("w+1",), "bit_order": ("msb_first",), "scale": ("f32_tail",)},
    "tiled": {"tile_rows": (4, 8, 16, 32), "block_k": (16,), "lane_k": (4,), "code": ("w+1",),
              "bit_order": ("lsb_first",), "scale": ("f32_head",)},
    "base3": {"tile_rows": (4, 8, 16, 32), "block_k": (20,), "lane_k": (4,), "code": ("w+1",),
              "bit_order": ("base3_msd_first",), "scale": ("f32_head",)},
}


def check_layout(lay):
    need(isinstance(lay, dict) and lay.get("kind") in LAYOUTS, "§6.1 layout.kind unknown")
    spec = LAYOUTS[lay["kind"]]
    for k, allowed in spec.items():
        need(k in lay and type(lay[k]) is type(allowed[0]) and lay[k] in allowed,
             f"§6.1 layout.{k} missing or unsupported")
    other = set().union(*(LAYOUTS.values())) - set(spec)       # members marked "absent"
    need(not other & set(lay), f"§6.1 layout member(s) {sorted(other & set(lay))} must be absent")


def tensor_length(enc, shape, lay):
    n = math.prod(shape)
    if enc == "f32":
        return 4 * n
    if enc in ("f16", "bf16"):
        return 2 * n
    need(len(shape) == 2, f"§5 {enc} tensor must have shape [rows, cols]")
    N, K = shape
    if enc == "i8_row":
        return align64(4 * N) + N * K
    if enc == "q4_b32":
        need(K % 32 == 0, "§5 q4_b32 columns must be a multiple of 32")
        return align64(N * K // 16) + N * K // 2
    if lay["kind"] == "i2s":
        B = lay["block"]
        return -(-N * K // B) * B // 4 + 32
    R = lay["tile_rows"]
    return 64 + -(-N // R) * -(-K // lay["block_k"]) * 4 * R


def check_tensor(t, names):
    need(isinstance(t, dict), "§3.5 tensor entry must be an object")
    need(isinstance(t.get("name"), str) and t["name"] not in names, "§3.5 name missing or not unique")
    names.add(t["name"])
    enc = t.get("encoding")
    need(enc in ("f32", "f16", "bf16", "i8_row", "q4_b32", "ternary"), f"§3.5 unknown encoding {enc!r}")
    sh = t.get("shape")
    need(isinstance(sh, list) and all(is_int(d) for d in sh), "§3.5 shape must be an array of u64")
    need(math.prod(sh) <= 2**48, "§3.5 shape product exceeds 2^48")
    need(is_int(t.get("offset")) and t["offset"] % 64 == 0, "§3.5 offset not a u64 multiple of 64")
    need(is_int(t.get("length")), "§3.5 length not a u64")
    need(isinstance(t.get("crc32"), str) and re.fullmatch(r"[0-9a-f]{8}", t["crc32"]),
         "§3.5 crc32 not 8 lower-case hex digits")
    if enc == "ternary":
        need("layout" in t, "§3.5 layout required for ternary")
        check_layout(t["layout"])
    else:
        need("layout" not in t, "§3.5 layout forbidden for non-ternary encodings")
    need(t["length"] == tensor_length(enc, sh, t.get("layout")), "§3.5/§5 length does not match encoding and shape")


CANON = re.compile(r"token_embd|output_norm|output|blk\.(0|[1-9]\d*)\.(attn_(norm|q|k|v|sub_norm|output)"
                   r"|ffn_(norm|gate|up|sub_norm|down))")


# ---------------------------------------------------------------- ternary codecs
def ternary_slots(lay, N, K):
    """Return (code region [lo, hi), slot(row, col) -> (byte, s), list of padding slots), where s is
    the bit shift of a 2-bit field, or for base3 the digit index (§6.4)."""
    if lay["kind"] == "i2s":
        B = lay["block"]; G = B // 4; n = N * K; P = -(-n // B) * B

        def flat(i):
            b, e = divmod(i, B)
            return b * G + e % G, 6 - 2 * (e // G)
        return (0, P // 4), (lambda r, c: flat(r * K + c)), [flat(i) for i in range(n, P)]
    R = lay["tile_rows"]; BK = lay["block_k"]; T = -(-N // R); KB = -(-K // BK)
    base3 = lay["kind"] == "base3"

    def slot(row, col):
        t, r = divmod(row, R); kb, k = divmod(col, BK)
        return 64 + (t * KB + kb) * 4 * R + 4 * r + k % 4, k // 4 if base3 else 2 * (k // 4)
    pad = [slot(r, c) for r in range(T * R) for c in range(BK * KB) if r >= N or c >= K]
    return (64, 64 + T * KB * 4 * R), slot, pad


def base3_byte(digits):
    v = 0
    for d in digits:
        v = 3 * v + d
    return -(-v * 256 // 243)


def get_code(lay, byte, s):
    if lay["kind"] == "base3":
        return 3 * (byte * 3 ** s % 256) // 256
    return (byte >> s) & 3


def set_code(lay, byte, s, code):
    if lay["kind"] == "base3":
        digits = [get_code(lay, byte, p) for p in range(5)]
        digits[s] = code
        return base3_byte(digits)
    return byte & ~(3 << s) | code << s


def scale_span(lay, region):
    return (region[1], region[1] + 4, region[1] + 32) if lay["kind"] == "i2s" else (0, 4, 64)


def decode_ternary(buf, lay, N, K, what):
    region, slot, pad = ternary_slots(lay, N, K)
    s0, s1, z1 = scale_span(lay, region)
    (w,) = struct.unpack_from("<f", buf, s0)
    need(math.isfinite(w), f"§6.1 {what}: scale is not finite")
    need(not any(buf[s1:z1]), f"§6.2/§6.3 {what}: reserved bytes next to the scale are not zero")
    if lay["kind"] == "base3":
        valid = {base3_byte([v // 81, v // 27 % 3, v // 9 % 3, v // 3 % 3, v % 3]) for v in range(243)}
        for i in range(*region):
            need(buf[i] in valid, f"§6.4 {what}: byte {i} is not a base-3 code byte")
    else:
        for i in range(*region):
            need(all((buf[i] >> s) & 3 != 3 for s in (0, 2, 4, 6)), f"§6 {what}: code 11 at byte {i}")
    for b, s in pad:
        need(get_code(lay, buf[b], s) == 1, f"§6 {what}: padding position at byte {b} (slot {s}) is not code 1")
    vals = [get_code(lay, buf[b], s) - 1 for b, s in (slot(r, c) for r in range(N) for c in range(K))]
    return vals, w


def encode_ternary(vals, w, lay, N, K):
    region, slot, _ = ternary_slots(lay, N, K)
    out = bytearray(region[1] + (32 if lay["kind"] == "i2s" else 0))
    pad = b"\x80" if lay["kind"] == "base3" else b"\x55"
    out[region[0]:region[1]] = pad * (region[1] - region[0])
    for r in range(N):
        for c in range(K):
            b, s = slot(r, c)
            out[b] = set_code(lay, out[b], s, vals[r * K + c] + 1)
    s0 = scale_span(lay, region)[0]
    out[s0:s0 + 4] = struct.pack("<f", w)
    return bytes(out)


# ---------------------------------------------------------------- decoding
def decode(t, buf):
    enc, sh, n = t["encoding"], t["shape"], math.prod(t["shape"])
    if enc == "f32":
        return list(struct.unpack(f"<{n}f", buf)), None
    if enc == "f16":
        return list(struct.unpack(f"<{n}e", buf)), None
    if enc == "bf16":
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack(f"<{n}H", buf)], None
    N, K = sh
    if enc == "i8_row":
        a = align64(4 * N)
        need(not any(buf[4 * N:a]), f"§5 {t['name']}: i8_row bytes between 4R and align64(4R) not zero")
        s = struct.unpack_from(f"<{N}f", buf, 0)
        q = struct.unpack_from(f"<{N * K}b", buf, a)
        # product taken in binary32 (one rounding of the exact product); see report
        return [struct.unpack("<f", struct.pack("<f", q[i] * s[i // K]))[0] for i in range(N * K)], None
    if enc == "q4_b32":
        S = align64(N * K // 16)
        need(not any(buf[N * K // 16:S]), f"§5.1 {t['name']}: bytes between the scales and the codes not zero")
        d = struct.unpack_from(f"<{N * K // 32}e", buf, 0)
        need(all(math.isfinite(x) for x in d), f"§5.1 {t['name']}: scale not finite")
        out = []
        for r in range(N):
            for c in range(K):
                b, j = divmod(c, 32)
                byte = buf[S + r * K // 2 + 16 * b + j % 16]
                n = byte & 15 if j < 16 else byte >> 4
                out.append((n - 8) * d[r * K // 32 + b])
        return out, None
    return decode_ternary(buf, t["layout"], N, K, t["name"])


def read_file(path):
    data = open(path, "rb").read()
    # §2: checks made before reading anything else
    need(len(data) >= 32, "§2 file shorter than 32 bytes")
    need(data[:8] == MAGIC, "§2 wrong magic")
    major, minor, hcrc, hlen, reserved = struct.unpack_from("<HHIQQ", data, 8)
    need(major == 1, f"§2 unknown major version {major}")
    need(reserved == 0, "§2 reserved bytes not zero")
    need(hlen <= MAX_HEADER, "§2 header_len greater than 256 MiB")
    need(32 + hlen <= len(data), "§2 header extends past the end of the file")
    need(zlib.crc32(data[0:12] + data[16:32] + data[32:32 + hlen]) == hcrc, "§2 header_crc32 mismatch")
    # §3: header
    try:
        text = data[32:32 + hlen].decode("utf-8")
        h = json.loads(text, object_pairs_hook=no_dups, parse_constant=bad_const)
    except (UnicodeDecodeError, ValueError) as e:
        raise Reject(f"§3 header is not UTF-8 JSON: {e}")
    need(isinstance(h, dict), "§3 header is not a JSON object")
    check_model(h.get("model"))
    check_optional_sections(h)
    need(isinstance(h.get("tensors"), list), "§3 tensors missing or not an array")
    names = set()
    for t in h["tensors"]:
        check_tensor(t, names)
    # §1 / §3.5: placement
    ds = align64(32 + hlen)
    E = max((t["offset"] + t["length"] for t in h["tensors"]), default=0)
    need(len(data) == ds + align64(E), f"§1 file length {len(data)} != data_start + align64(E) = {ds + align64(E)}")
    spans = sorted((t["offset"], t["offset"] + t["length"]) for t in h["tensors"] if t["length"])
    need(all(a1 <= b0 for (_, a1), (b0, _) in zip(spans, spans[1:])), "§3.5 tensor byte ranges overlap")
    # §3.5 / §7: every byte outside preamble, header and tensors is zero
    covered = bytearray(len(data))
    covered[:32 + hlen] = b"\x01" * (32 + hlen)
    for t in h["tensors"]:
        covered[ds + t["offset"]: ds + t["offset"] + t["length"]] = b"\x01" * t["length"]
    bad = next((i for i in range(len(data)) if not covered[i] and data[i]), None)
    need(bad is None, f"§3.5 non-zero padding byte at file offset {bad}")
    # §7: tensor checksums, then decode
    out = {}
    for t in h["tensors"]:
        buf = data[ds + t["offset"]: ds + t["offset"] + t["length"]]
        need(f"{zlib.crc32(buf):08x}" == t["crc32"], f"§3.5 crc32 mismatch for tensor {t['name']}")
        out[t["name"]] = decode(t, buf)
    return h, out, (major, minor)


def same(a, b):
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--golden")
    ap.add_argument("--vectors")
    a = ap.parse_args()
    ok = True
    try:
        h, tensors, ver = read_file(a.file)
    except Reject as e:
        print(f"REJECT {a.file}: {e}")
        return 1
    print(f"OK {a.file}: version {ver[0]}.{ver[1]}, {len(tensors)} tensors, all CRCs and padding verified")
    for t in h["tensors"]:
        if not CANON.fullmatch(t["name"]):
            print(f"  note: tensor name {t['name']!r} is not a canonical §4 name")
    if a.golden:
        for g in json.load(open(a.golden))["tensors"]:
            got = tensors.get(g["name"])
            good = got is not None and same(got[0], g["values"]) and got[1] == g.get("scale")
            ok &= good
            extra = f" scale={got[1]}" if got and got[1] is not None else ""
            print(f"  {'match   ' if good else 'MISMATCH'} {g['name']}: {len(g['values'])} values{extra}")
        missing = set(tensors) - {g["name"] for g in json.load(open(a.golden))["tensors"]}
        if missing:
            ok = False
            print(f"  MISMATCH tensors not in golden: {sorted(missing)}")
    if a.vectors:
        for p in sorted(glob.glob(os.path.join(a.vectors, "*.json"))):
            v = json.load(open(p))
            lay, N, K = v["layout"], v["rows"], v["cols"]
            flat = [x for row in v["values"] for x in row]
            raw = bytes.fromhex(v["bytes_hex"])
            try:
                check_layout(lay)
                need(len(raw) == tensor_length("ternary", [N, K], lay), "§6 vector length mismatch")
                vals, w = decode_ternary(raw, lay, N, K, os.path.basename(p))
                dec_ok = vals == flat and w == v["scale"]
                enc_ok = encode_ternary(flat, v["scale"], lay, N, K) == raw
            except Reject as e:
                dec_ok = enc_ok = False
                print(f"  REJECT {p}: {e}")
            ok &= dec_ok and enc_ok
            print(f"  vector {os.path.basename(p)} ({N}x{K}, {len(raw)} bytes): decode "
                  f"{'ok' if dec_ok else 'MISMATCH'}, encode {'ok' if enc_ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
