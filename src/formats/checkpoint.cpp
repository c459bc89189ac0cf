// Checkpoints written atomically (temporary directory, fsync, rename, then the `latest` pointer),
// read back for an exact resume. A crash mid-write never damages the previous checkpoint.
#include "peft/formats/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/formats/safetensors.h"

namespace peft {
namespace fs = std::filesystem;

namespace {

// Test hook: PEFT_FAULT_KILL_DURING_CHECKPOINT=N ends the process in the middle of writing the
// checkpoint of step N, as a power cut or `kill -9` would, so tests can check the previous one survives.
void maybe_fault(int64_t step) {
  if (const char* v = std::getenv("PEFT_FAULT_KILL_DURING_CHECKPOINT")) {
    if (std::string(v) == std::to_string(step)) ::_exit(137);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, const Checkpoint& ckpt, int64_t keep,
                            const std::function<void(const std::string&)>& extra) {
  fs::create_directories(root);
  std::string name = "step-" + std::to_string(step);
  fs::path final_dir = fs::path(root) / name;
  fs::path tmp = fs::path(root) / (name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_safetensors((tmp / "state.safetensors").string(), ckpt.tensors, {{"format", "peft.cpp-checkpoint"}});
  maybe_fault(step);
  write_text_atomic((tmp / "trainer_state.json").string(), ckpt.state.dump(2) + "\n");
  if (extra) extra(tmp.string());
  fsync_path(tmp.string());
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(fs::path(root).string());
  write_text_atomic((fs::path(root) / "latest").string(), name + "\n");
  // Keep the newest `keep` checkpoints.
  std::vector<std::pair<int64_t, fs::path>> all;
  for (auto& e : fs::directory_iterator(root)) {
    auto fn = e.path().filename().string();
    if (e.is_directory() && fn.rfind("step-", 0) == 0 && fn.find(".tmp") == std::string::npos) {
      try {
        all.emplace_back(std::stoll(fn.substr(5)), e.path());
      } catch (...) {
      }
    }
  }
  std::sort(all.begin(), all.end());
  if (keep > 0)
    for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i].second);
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& root) {
  std::ifstream in(fs::path(root) / "latest");
  if (!in) return std::nullopt;
  std::string name;
  in >> name;
  fs::path dir = fs::path(root) / name;
  if (name.empty() || !fs::exists(dir / "trainer_state.json")) return std::nullopt;
  return dir.string();
}

Checkpoint load_checkpoint(const std::string& path) {
  fs::path dir(path);
  if (!fs::exists(dir / "trainer_state.json") || !fs::exists(dir / "state.safetensors")) {
    throw std::runtime_error(path + ": not a checkpoint (expected trainer_state.json and state.safetensors)");
  }
  Checkpoint c;
  c.state = read_json_file((dir / "trainer_state.json").string(), "a checkpoint's trainer state");
  c.tensors = load_safetensors((dir / "state.safetensors").string());
  return c;
}

at::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state().clone();
}

void set_rng_state(const at::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state.to(at::kByte).contiguous());
}

}  // namespace peft
