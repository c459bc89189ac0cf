// The output directory of one `peft train` run, guarded before the first step: one run at a time
// (an flock'ed lock file), an earlier run never silently replaced, every file of the run writable.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace peft {

class RunDir {
 public:
  // Creates `dir` if needed and takes its lock (refusing, with the other run's pid and start time,
  // while another process holds it; a lock left by a dead process is taken over and said so).
  // Then, unless `resume`: an earlier run in `dir` (non-empty metrics.jsonl or ranks.jsonl, a
  // checkpoint, adapter/ or model/) is refused, or removed with `overwrite`. Half-written
  // checkpoint directories (checkpoints/step-N.tmp-PID) are removed. Finally every file the run
  // writes is created or opened for writing, so a run that cannot write stops before training.
  // Errors (std::invalid_argument) name the directory, the file and what to do. `say` prints notes.
  RunDir(const std::string& dir, bool resume, bool overwrite, const std::function<void(const std::string&)>& say);
  ~RunDir();  // releases the lock
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
  int lock_fd_ = -1;
};

// What an earlier run left in `dir`, for messages: "metrics.jsonl", "2 checkpoints", "adapter/".
std::vector<std::string> earlier_run_files(const std::string& dir);

}  // namespace peft
