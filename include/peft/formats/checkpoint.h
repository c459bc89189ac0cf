// Resumable training checkpoints: the whole trainable state (parameters, AdamW moments, the rank
// allocator's EMAs and mask, the data position, the RNG) written atomically as one directory.
#pragma once
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

namespace peft {

struct Checkpoint {
  std::map<std::string, at::Tensor> tensors;  // "params", "exp_avg", "exp_avg_sq", "allocator.*", "rng"
  nlohmann::json state;                        // step, data position, config, options
};

// Writes `ckpt` as `root/step-<step>` through a temporary directory and a rename, then points
// `root/latest` at it, then removes the oldest step-* beyond `keep`. A write that dies midway
// leaves the previous checkpoint and `latest` as they were. `extra` is called with the temporary
// directory to add files (e.g. the PEFT adapter) before the rename.
std::string save_checkpoint(const std::string& root, int64_t step, const Checkpoint& ckpt, int64_t keep,
                            const std::function<void(const std::string&)>& extra = {});

// Reads a checkpoint directory, or `root/latest` when `path` is "latest" with `root` given.
Checkpoint load_checkpoint(const std::string& path);
// The directory `root/latest` names, if any.
std::optional<std::string> latest_checkpoint(const std::string& root);

// The CPU generator's state (dropout, sampling) as a byte tensor, and back.
at::Tensor rng_state();
void set_rng_state(const at::Tensor& state);

}  // namespace peft
