// A base model with LoRA or AdaLoRA adapters attached: the object a training loop drives.
// forward() adds AdaLoRA's orthogonal penalty; update_and_allocate(step) runs the rank allocator.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft/layers/adapter.h"
#include "peft/formats/adapter_config.h"
#include "peft/models/model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/allocator/rank_allocator.h"

namespace peft {

struct AdaptedModule {
  std::string path;  // module path in the model, e.g. "model.layers.0.self_attn.q_proj"
  std::shared_ptr<LinearImpl> linear;
  std::shared_ptr<AdapterLayer> adapter;
};

class PeftModel {
 public:
  // Attaches freshly initialised adapters (PEFT's init_lora_weights=True) to the modules the
  // config selects, freezes the base model and makes modules_to_save trainable. Validates the
  // config (total_step may still be 0 here; it is checked before training).
  PeftModel(std::shared_ptr<Model> base, AdapterConfig config);

  // Loads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) onto `base`.
  // AdaLoRA modules take their kept rank from the tensor shapes and keep ranknum = init_r.
  static std::unique_ptr<PeftModel> load(std::shared_ptr<Model> base, const std::string& adapter_dir);
  // Replaces the adapter weights (and modules_to_save weights) with those of a PEFT adapter
  // file of the same shapes, e.g. a golden case's adapter_init.
  void load_weights(const std::string& adapter_dir);
  // Writes adapter_config.json and adapter_model.safetensors as PEFT does (AdaLoRA sliced to the
  // rank_pattern), atomically.
  void save(const std::string& dir) const;
  // The tensors save() writes, by PEFT key.
  std::map<std::string, at::Tensor> adapter_state_dict() const;

  ModelOutput forward(const Batch& batch);
  // AdaLoRA: once per optimizer step, after optimizer.step(), before zero_grad().
  AllocationEvent update_and_allocate(int64_t step);
  // AdaLoRA's orthogonal regularisation (docs/adalora.md, section 6), differentiable.
  at::Tensor orthogonal_penalty();

  void train(bool on = true);
  bool is_training() const { return training_; }
  void merge(bool safe = true);
  void unmerge();
  // Folds the adapters into the base weights and detaches them; returns the plain model.
  std::shared_ptr<Model> merge_and_unload();

  Model& base() { return *base_; }
  std::shared_ptr<Model> base_ptr() { return base_; }
  AdapterConfig& config() { return config_; }
  const AdapterConfig& config() const { return config_; }
  const std::vector<AdaptedModule>& modules() const { return modules_; }
  ParamBuffer& params() { return params_; }
  RankAllocator* allocator() { return allocator_.get(); }
  const RankAllocator* allocator() const { return allocator_.get(); }
  int64_t trainable_parameters() const { return params_.numel(); }
  int64_t total_parameters() const;

  // Called once with a message when a model in training mode has run more than tinit + deltaT
  // optimizer steps' worth of loss computations while update_and_allocate was never called.
  // Default: print to stderr.
  std::function<void(const std::string&)> on_warning;
  // Loss computations per optimizer step (gradient accumulation). The warning above allows
  // tinit + deltaT optimizer steps, that is this many times as many loss computations.
  int64_t forwards_per_step = 1;

 private:
  PeftModel(std::shared_ptr<Model> base, AdapterConfig config, const std::map<std::string, at::Tensor>& tensors);
  // The base model's default target modules for this adapter type, where the config names none.
  void fill_default_targets();
  void attach(const std::function<int64_t(const std::string&)>& rank_of);
  void pack();
  std::vector<std::pair<std::string, at::Tensor>> modules_to_save_params();

  std::shared_ptr<Model> base_;
  AdapterConfig config_;
  std::vector<AdaptedModule> modules_;
  ParamBuffer params_;
  std::unique_ptr<RankAllocator> allocator_;
  std::vector<std::vector<at::Tensor*>> orth_groups_a_, orth_groups_b_;
  bool training_ = true;
  int64_t loss_calls_ = 0;
  bool warned_ = false;
};

// Selection of target modules as PEFT does it: a name in `target_modules` equal to the path or to
// its last dotted component(s), or the regex (full match), or "all-linear" (every Linear except
// the output and head layers); minus exclude_modules and modules_to_save.
bool is_target_module(const AdapterConfig& c, const std::string& path, const std::vector<std::string>& head_modules);

// Exports an AdaLoRA adapter directory as a plain PEFT LoRA adapter directory: per-module
// A' = (A * E)[kept], B' = B[:, kept], rank_pattern r_k and alpha_pattern alpha_k with
// alpha_k / r_k == lora_alpha / (init_r + 1e-5). Modules pruned to rank 0 are left out.
void export_adalora_as_lora(const std::string& adalora_dir, const std::string& lora_dir);

}  // namespace peft
