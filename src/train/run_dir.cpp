// Guards a run's output directory: the lock (flock on DIR/.lock), the refusal to mix a new run with
// an earlier one, the removal of half-written checkpoints, and a write probe of every run file.
#include "peft/train/run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace peft {
namespace fs = std::filesystem;

namespace {

const char* kLockFile = ".lock";
// The files and folders a run writes, removed by --overwrite-output-dir.
const char* kRunFiles[] = {"metrics.jsonl", "ranks.jsonl", "report.html", "checkpoints", "adapter", "model"};

bool non_empty_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && fs::file_size(p, ec) > 0;
}

bool process_alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

std::string read_small(int fd) {
  char buf[512];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

long lock_pid(const std::string& text) {
  std::istringstream in(text);
  std::string word;
  long pid = 0;
  in >> word >> pid;
  return word == "pid" ? pid : 0;
}

std::string now_text() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

// Opens `p` for appending (creating it) and closes it: the check that the run can write it.
void probe_writable(const fs::path& p, const std::string& dir) {
  std::ofstream out(p, std::ios::app);
  if (!out) {
    throw std::invalid_argument("--output-dir " + dir + ": cannot write " + p.string() + " (" + std::strerror(errno) +
                                "); fix its permissions or choose another --output-dir");
  }
}

}  // namespace

std::vector<std::string> earlier_run_files(const std::string& dir) {
  std::vector<std::string> found;
  fs::path d(dir);
  std::error_code ec;
  for (auto* f : {"metrics.jsonl", "ranks.jsonl"})
    if (non_empty_file(d / f)) found.push_back(f);
  int checkpoints = 0;
  if (fs::is_directory(d / "checkpoints", ec)) {
    for (auto& e : fs::directory_iterator(d / "checkpoints", ec)) {
      auto name = e.path().filename().string();
      if (e.is_directory() && name.rfind("step-", 0) == 0 && name.find(".tmp") == std::string::npos) ++checkpoints;
    }
  }
  if (checkpoints) found.push_back(std::to_string(checkpoints) + (checkpoints == 1 ? " checkpoint" : " checkpoints"));
  for (auto* f : {"adapter", "model"})
    if (fs::is_directory(d / f, ec)) found.push_back(std::string(f) + "/");
  return found;
}

RunDir::RunDir(const std::string& dir, bool resume, bool overwrite, const std::function<void(const std::string&)>& say)
    : dir_(dir) {
  fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec || !fs::is_directory(d)) {
    throw std::invalid_argument("--output-dir " + dir + ": cannot create the directory (" +
                                (ec ? ec.message() : std::string("a file of that name exists")) + ")");
  }
  const std::string lock_path = (d / kLockFile).string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    throw std::invalid_argument("--output-dir " + dir + ": cannot write its lock file " + lock_path + " (" +
                                std::strerror(errno) + "); fix its permissions or choose another --output-dir");
  }
  const std::string previous = read_small(lock_fd_);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    std::string who = previous.empty() ? "another process" : previous.substr(0, previous.find('\n'));
    auto started = previous.find("started ");
    if (started != std::string::npos) who += ", " + previous.substr(started, previous.find('\n', started) - started);
    throw std::invalid_argument("--output-dir " + dir + " is in use by another peft train (" + who +
                                "): wait for it to end, or choose another --output-dir");
  }
  if (long pid = lock_pid(previous); pid > 0 && pid != ::getpid()) {
    say("note: " + lock_path + " was left by process " + std::to_string(pid) +
        (process_alive(pid) ? ", which no longer holds it" : ", which is no longer running") + "; taking it over\n");
  }
  std::string mine = "pid " + std::to_string(::getpid()) + "\nstarted " + now_text() + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, mine.data(), mine.size(), 0) != static_cast<ssize_t>(mine.size())) {
    throw std::invalid_argument("--output-dir " + dir + ": cannot write its lock file " + lock_path + " (" +
                                std::strerror(errno) + ")");
  }

  if (!resume) {
    auto earlier = earlier_run_files(dir);
    if (!earlier.empty()) {
      std::string list;
      for (auto& f : earlier) list += (list.empty() ? "" : ", ") + f;
      if (!overwrite) {
        throw std::invalid_argument("--output-dir " + dir + " holds an earlier run (" + list +
                                    "): continue it with --resume latest, replace it with --overwrite-output-dir, "
                                    "or choose another --output-dir");
      }
      for (auto* f : kRunFiles) fs::remove_all(d / f, ec);
      say("--overwrite-output-dir: removed the earlier run in " + dir + " (" + list + ")\n");
    }
  }

  // Our lock is held, so any step-N.tmp-PID directory is what a killed run left behind.
  if (fs::is_directory(d / "checkpoints", ec)) {
    for (auto& e : fs::directory_iterator(d / "checkpoints", ec)) {
      auto name = e.path().filename().string();
      if (e.is_directory() && name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos) {
        fs::remove_all(e.path(), ec);
        say("note: removed the half-written checkpoint " + e.path().string() + " of an interrupted run\n");
      }
    }
  }

  fs::create_directories(d / "checkpoints", ec);
  if (ec || !fs::is_directory(d / "checkpoints")) {
    throw std::invalid_argument("--output-dir " + dir + ": cannot create " + (d / "checkpoints").string() + " (" +
                                (ec ? ec.message() : std::string("a file of that name exists")) + ")");
  }
  probe_writable(d / "checkpoints" / ".write-test", dir);
  fs::remove(d / "checkpoints" / ".write-test", ec);
  for (auto* f : {"metrics.jsonl", "ranks.jsonl"}) probe_writable(d / f, dir);
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) {
    // An empty lock file is one its holder released; only a killed run leaves its pid behind.
    if (::ftruncate(lock_fd_, 0) != 0) {
      // the next run then notes a lock left behind, which is all that is lost
    }
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
  }
}

}  // namespace peft
