// A run's record files with one owner: metrics.jsonl (train and eval records) and ranks.jsonl (one
// record per AdaLoRA allocation) are written and read back only here (docs/formats.md).
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "peft/eval/evaluate.h"
#include "peft/allocator/rank_allocator.h"

namespace peft {

class PeftModel;

// What a run directory holds, as read back by the report and `peft ranks`.
struct RunRecords {
  nlohmann::json train = nlohmann::json::array();   // metrics.jsonl records with type "train"
  nlohmann::json eval = nlohmann::json::array();    // records with type "eval"
  nlohmann::json ranks = nlohmann::json::array();   // ranks.jsonl records (empty for LoRA)
  bool has_ranks = false;   // ranks.jsonl exists
  int skipped_lines = 0;    // unparsable lines (a truncated last line of a running job)
};

// Reads one JSON object per line; NaN / Infinity tokens (as Python writes them) become null, lines
// that do not parse are counted in `skipped` and left out. Throws std::runtime_error naming the file
// when it cannot be opened.
nlohmann::json read_jsonl(const std::string& path, int* skipped = nullptr);

// RUN_DIR/metrics.jsonl (required) and RUN_DIR/ranks.jsonl (optional).
RunRecords read_run_records(const std::string& run_dir);

// A ranks.jsonl record, read from a record of any shape without throwing (missing fields keep
// their defaults; a module without "allocated" counts the true entries of its "pattern").
struct AllocationRecord {
  nlohmann::json step, budget;  // numbers, or null when missing
  std::string phase;
  bool final_mask = false;
  int64_t init_r = 0, target_r = 0;
  std::vector<std::pair<std::string, int64_t>> allocated;  // module path -> kept rank, in record order
};
AllocationRecord parse_allocation(const nlohmann::json& record);

// One optimizer step as metrics.jsonl records it. `step` counts optimizer steps from 1 (the
// numbering of the console, evaluations, checkpoints and ranks.jsonl). `loss` is the model's task
// loss; AdaLoRA's orthogonal penalty is `orth_penalty`, apart (NaN when there is none).
struct StepRecord {
  int64_t step = 0;
  double loss = 0, orth_penalty = NAN, lr = 0, grad_norm = 0;
  int64_t tokens = 0;
  double tokens_per_s = 0, elapsed_s = 0, epoch = 0;
  // AdaLoRA: phase after the step, scheduled budget, total non-zero lora_E entries (live rank)
  const char* phase = nullptr;
  int64_t budget = 0, live_rank = 0;
};

// The ranks.jsonl record of allocation `ev`, made after optimizer step `step` (counted from 1).
nlohmann::json allocation_record(const PeftModel& model, const AllocationEvent& ev, int64_t step);

// A record that could not be written (a full disk, a file made unwritable): the run stops.
struct RunWriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Appends records to RUN_DIR's files. Every write is checked: a failure throws std::runtime_error
// naming the file and the reason, so that a run never loses its records silently.
class RunLog {
 public:
  explicit RunLog(std::string run_dir);
  // A new run (`completed_steps` 0) starts both files empty; a resumed one keeps what was written
  // up to its checkpoint after `completed_steps` steps (rewritten atomically).
  void start(int64_t completed_steps);
  void step(const StepRecord& r);
  void eval(int64_t step, const EvalResult& e);
  void allocation(const nlohmann::json& record);

 private:
  void append(const std::string& file, const nlohmann::json& record);
  std::string dir_;
};

}  // namespace peft
