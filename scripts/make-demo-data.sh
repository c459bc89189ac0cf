#!/usr/bin/env bash
# Builds the `make demo` datasets under data/demo/ from Debian's fortune collections (packages
# fortunes and fortunes-min, BSD licence): pretraining text, and a definitions prompt -> completion task.
#
# Deterministic: the same package files give byte-identical output (no shuffling, no clock).
#   data/demo/pretrain.jsonl          {"text"}: every English fortune except the held-out collections
#   data/demo/definitions-train.jsonl {"prompt","completion"}: "Word, n.:\n" -> its definition
#   data/demo/definitions-eval.jsonl  every 10th definition, held out for evaluation
#   data/demo/citations-{train,eval}.jsonl  chats: an attributed fortune -> its attribution as JSON
# Usage: scripts/make-demo-data.sh [OUT_DIR]   (default data/demo; FORTUNES_DIR overrides the source)
set -euo pipefail
export LC_ALL=C

SRC=${FORTUNES_DIR:-/usr/share/games/fortunes}
OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/data/demo}
# Held out of pretraining: definitions (the fine-tuning task), ascii-art (pictures, not prose),
# translate-me (Latin and other languages).
HELD_OUT="definitions ascii-art translate-me"

for tool in jq sed awk; do
  command -v "$tool" >/dev/null || { echo "make-demo-data: $tool is missing (sudo apt-get install $tool)" >&2; exit 1; }
done
[ -f "$SRC/definitions" ] || { echo "make-demo-data: no $SRC/definitions (install the fortunes package: make setup)" >&2; exit 1; }
mkdir -p "$OUT"

# One fortune file to entries separated by the ASCII record separator (0x1e): overstrike sequences
# (x BACKSPACE y) become y, carriage returns and trailing blanks go, blank edge lines are dropped.
entries() {
  sed -e 's/.\x08//g' -e 's/\r//g' -e 's/[ \t]*$//' "$1" |
    awk '
      function flush() {
        while (n > 0 && line[n] == "") n--
        s = 1
        while (s <= n && line[s] == "") s++
        if (s <= n) {
          out = line[s]
          for (i = s + 1; i <= n; i++) out = out "\n" line[i]
          printf "%s\036", out
        }
        n = 0
      }
      $0 == "%" { flush(); next }
      { line[++n] = $0 }
      END { flush() }'
}

# Pretraining text: every collection of the two packages (sorted by name) except the held-out ones.
: > "$OUT/pretrain.jsonl"
for f in $(ls "$SRC" | grep -v -e '\.dat$' -e '\.u8$' | sort); do
  case " $HELD_OUT " in *" $f "*) continue ;; esac
  [ -f "$SRC/$f" ] || continue
  entries "$SRC/$f" | jq -R -s -c 'split("\u001e")[] | select(length > 0) | {text: .}' >> "$OUT/pretrain.jsonl"
done

# Definitions: entries shaped "Headword:" or "Headword, n.:" (also laws, "Murphy's Law:") then the
# indented definition. Prompt: the headword line and a newline; completion: the definition with its
# line breaks and indentation folded to single spaces (an attribution stays, after " -- ").
entries "$SRC/definitions" |
  jq -R -s -c '
    split("\u001e")[] | select(length > 0)
    | (split("\n")) as $lines
    | select(($lines | length) > 1 and ($lines[0] | test("^[^\t ].*:$")))
    | {prompt: ($lines[0] + "\n"),
       completion: ($lines[1:] | join(" ") | gsub("[\t ]+"; " ") | sub("^ "; ""))}
    | select((.completion | length) > 0 and (.completion | length) <= 400)' > "$OUT/definitions.all.jsonl"
awk 'NR % 10 == 0' "$OUT/definitions.all.jsonl" > "$OUT/definitions-eval.jsonl"
awk 'NR % 10 != 0' "$OUT/definitions.all.jsonl" > "$OUT/definitions-train.jsonl"
rm -f "$OUT/definitions.all.jsonl"

# Citations (the real-model demo): short attributed fortunes of the pretraining text, as a chat in
# which the assistant answers with the attribution as JSON: the author (before the first ", ") and
# the source (the rest, or null). Every 13th of the first 5200 is training data (400), every 13th
# shifted by 6 held out (400 more, of which the first 40 are kept).
jq -c '
  select(.text | test("\n\\s*-- [^\n]+$")) | select((.text | length) < 280)
  | (.text | capture("\n\\s*-- (?<a>[^\n]+)$").a) as $attribution
  | ($attribution | index(", ")) as $comma
  | {messages: [
      {role: "user", content: ("Cite this as JSON (author, source):\n\n" + .text)},
      {role: "assistant", content: ({author: (if $comma then $attribution[:$comma] else $attribution end),
                                     source: (if $comma then $attribution[$comma + 2:] else null end)} | tojson)}]}' \
  "$OUT/pretrain.jsonl" > "$OUT/citations.all.jsonl"
awk 'NR <= 5200 && NR % 13 == 0' "$OUT/citations.all.jsonl" > "$OUT/citations-train.jsonl"
awk 'NR <= 5200 && NR % 13 == 6' "$OUT/citations.all.jsonl" | awk 'NR <= 40' > "$OUT/citations-eval.jsonl"
rm -f "$OUT/citations.all.jsonl"

for f in pretrain definitions-train definitions-eval citations-train citations-eval; do
  printf 'make-demo-data: %-42s %6d records, %8d bytes\n' "$OUT/$f.jsonl" "$(wc -l < "$OUT/$f.jsonl")" "$(wc -c < "$OUT/$f.jsonl")"
done
