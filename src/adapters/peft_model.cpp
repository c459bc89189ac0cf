// PeftModel: attaches adapters to a base model's Linear modules, freezes the base, groups the
// trainable tensors in one flat buffer, adds the orthogonal penalty and drives the rank allocator.
#include "peft/adapters/peft_model.h"
#include "peft/core/strings.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>

namespace peft {
namespace {

// PEFT's list matching: the whole path, or its last dotted components.
bool name_matches(const std::string& path, const std::string& name) {
  return path == name || ends_with(path, "." + name);
}

// A module is inside `name` when `name` matches the path or one of its prefixes.
bool inside_module(const std::string& path, const std::string& name) {
  std::string prefix = path;
  while (true) {
    if (name_matches(prefix, name)) return true;
    auto dot = prefix.rfind('.');
    if (dot == std::string::npos) return false;
    prefix = prefix.substr(0, dot);
  }
}

}  // namespace

bool is_target_module(const AdapterConfig& c, const std::string& path, const std::vector<std::string>& head_modules) {
  for (auto& m : c.modules_to_save)
    if (inside_module(path, m)) return false;
  for (auto& m : c.exclude_modules)
    if (name_matches(path, m)) return false;
  if (c.target_modules_regex) return std::regex_match(path, std::regex(*c.target_modules_regex));
  for (auto& t : c.target_modules) {
    if (t == "all-linear") {
      if (path == "lm_head") return false;
      for (auto& h : head_modules)
        if (inside_module(path, h)) return false;
      return true;
    }
    if (name_matches(path, t)) return true;
  }
  return false;
}

void PeftModel::fill_default_targets() {
  if (!config_.target_modules.empty() || config_.target_modules_regex) return;
  config_.target_modules = config_.peft_type == PeftType::AdaLora ? base_->default_adalora_target_modules()
                                                                  : base_->default_target_modules();
}

PeftModel::PeftModel(std::shared_ptr<Model> base, AdapterConfig config)
    : base_(std::move(base)), config_(std::move(config)) {
  fill_default_targets();
  if (config_.task_type == "SEQ_CLS" && config_.modules_to_save.empty()) config_.modules_to_save = base_->head_modules();
  if (config_.peft_type == PeftType::AdaLora) {
    AdapterConfig check = config_;
    if (check.total_step <= 0) check.total_step = check.tinit + check.tfinal + 1;  // checked again before training
    check.validate();
  } else {
    config_.validate();
  }
  attach([&](const std::string& path) -> int64_t {
    if (config_.peft_type == PeftType::AdaLora) return config_.init_r;
    return config_.rank_of(path);
  });
  pack();
}

void PeftModel::attach(const std::function<int64_t(const std::string&)>& rank_of) {
  auto heads = base_->head_modules();
  auto opts = at::TensorOptions().dtype(at::kFloat);
  for (auto& [path, linear] : base_->linear_modules()) {
    if (!is_target_module(config_, path, heads)) continue;
    opts = opts.device(linear->weight.device());
    int64_t r = rank_of(path);
    std::shared_ptr<AdapterLayer> layer;
    if (config_.peft_type == PeftType::AdaLora) {
      auto a = std::make_shared<AdaLoraLayer>(linear->in_features(), linear->out_features(), r, config_.lora_alpha,
                                              config_.lora_dropout, opts);
      a->ranknum = static_cast<double>(config_.init_r);
      a->scaling = config_.lora_alpha > 0 ? config_.lora_alpha : static_cast<double>(config_.init_r);
      layer = a;
    } else {
      layer = std::make_shared<LoraLayer>(linear->in_features(), linear->out_features(), r, config_.alpha_of(path),
                                          config_.use_rslora,
                                          config_.lora_dropout, opts);
    }
    if (linear->fan_in_fan_out()) config_.fan_in_fan_out = true;
    linear->adapter = layer;
    modules_.push_back({path, linear, layer});
  }
  if (modules_.empty()) {
    std::string names;
    for (auto& [path, l] : base_->linear_modules()) {
      auto last = path.substr(path.rfind('.') + 1);
      if (names.find(" " + last + ",") == std::string::npos) names += " " + last + ",";
    }
    throw std::invalid_argument("target_modules matched no Linear module of " + base_->config().architecture +
                                "; its projections are named:" + names.substr(0, names.size() - 1));
  }
  for (auto& p : base_->parameters()) p.requires_grad_(false);
}

std::vector<std::pair<std::string, at::Tensor>> PeftModel::modules_to_save_params() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (config_.modules_to_save.empty()) return out;
  for (auto& item : base_->named_parameters(true)) {
    const std::string& name = item.key();
    auto dot = name.rfind('.');
    std::string module = dot == std::string::npos ? "" : name.substr(0, dot);
    for (auto& m : config_.modules_to_save) {
      if (!module.empty() && inside_module(module, m)) {
        out.emplace_back(name, item.value());
        break;
      }
    }
  }
  return out;
}

void PeftModel::pack() {
  // Tensor handles share their TensorImpl, so rebinding the copies in `flat` (ParamBuffer::assign
  // uses set_data) rebinds the layers' and modules' own tensors too.
  std::vector<std::pair<std::string, at::Tensor>> flat;
  bool ada = config_.peft_type == PeftType::AdaLora;
  std::vector<std::string> kinds = ada ? std::vector<std::string>{"lora_A", "lora_E", "lora_B"}
                                       : std::vector<std::string>{"lora_A", "lora_B"};
  for (auto& kind : kinds) {
    for (auto& m : modules_) {
      for (auto& [name, t] : m.adapter->parameters()) {
        if (name == kind) {
          flat.emplace_back(m.path + "." + name, *t);
        }
      }
    }
  }
  for (auto& [name, t] : modules_to_save_params()) {
    if (t.scalar_type() != at::kFloat) t.set_data(t.to(at::kFloat));  // trained in float32
    flat.emplace_back(name, t);
  }
  params_.assign(flat);
  orth_groups_a_.clear();
  orth_groups_b_.clear();
  if (ada) {
    std::vector<AdaLoraLayer*> layers;
    std::vector<std::string> names;
    std::map<std::vector<int64_t>, std::vector<at::Tensor*>> ga, gb;
    for (auto& m : modules_) {
      auto* a = static_cast<AdaLoraLayer*>(m.adapter.get());
      layers.push_back(a);
      names.push_back(m.path);
      ga[a->lora_A.sizes().vec()].push_back(&a->lora_A);
      gb[a->lora_B.sizes().vec()].push_back(&a->lora_B);
    }
    for (auto& [k, v] : ga) orth_groups_a_.push_back(v);
    for (auto& [k, v] : gb) orth_groups_b_.push_back(v);
    allocator_ = std::make_unique<RankAllocator>(config_, names, layers, params_.values(), params_.grads(), 0);
  }
}

at::Tensor PeftModel::orthogonal_penalty() {
  at::Tensor total;
  auto add = [&](const at::Tensor& t) { total = total.defined() ? total + t : t; };
  for (auto& group : orth_groups_a_) {  // ||A A^T - I||_F per module
    if (group[0]->numel() == 0) continue;
    std::vector<at::Tensor> ts;
    for (auto* t : group) ts.push_back(*t);
    auto s = at::stack(ts);
    auto cov = at::bmm(s, s.transpose(1, 2));
    auto eye = at::eye(cov.size(1), cov.options());
    add(at::norm((cov - eye).flatten(1), 2, {1}).sum());
  }
  for (auto& group : orth_groups_b_) {  // ||B^T B - I||_F per module
    if (group[0]->numel() == 0) continue;
    std::vector<at::Tensor> ts;
    for (auto* t : group) ts.push_back(*t);
    auto s = at::stack(ts);
    auto cov = at::bmm(s.transpose(1, 2), s);
    auto eye = at::eye(cov.size(1), cov.options());
    add(at::norm((cov - eye).flatten(1), 2, {1}).sum());
  }
  int64_t n = 2 * static_cast<int64_t>(modules_.size());
  if (!total.defined()) return at::zeros({}, params_.values().options());
  return total / static_cast<double>(n);
}

ModelOutput PeftModel::forward(const Batch& batch) {
  ModelOutput out = base_->forward(batch);
  out.task_loss = out.loss;
  if (!out.loss.defined() || config_.peft_type != PeftType::AdaLora) return out;
  if (config_.orth_reg_weight > 0) out.loss = out.loss + config_.orth_reg_weight * orthogonal_penalty();
  if (training_ && at::GradMode::is_enabled()) {
    ++loss_calls_;
    if (!warned_ && allocator_ && allocator_->calls() == 0 &&
        loss_calls_ > (config_.tinit + config_.deltaT) * std::max<int64_t>(1, forwards_per_step)) {
      warned_ = true;
      std::string msg =
          "AdaLoRA: " + std::to_string(loss_calls_) +
          " training forward passes and update_and_allocate() was never called, so no rank is being "
          "allocated (ranks stay at init_r, rank_pattern stays empty). Call model.update_and_allocate(step) "
          "once per optimizer step, after optimizer.step() and before zero_grad(); `peft train` does it for you.";
      if (on_warning) on_warning(msg);
      else std::cerr << "warning: " << msg << "\n";
    }
  }
  return out;
}

AllocationEvent PeftModel::update_and_allocate(int64_t step) {
  if (!allocator_) throw std::logic_error("update_and_allocate: this is a LoRA adapter; only AdaLoRA allocates ranks");
  if (config_.total_step <= 0) {
    throw std::invalid_argument("update_and_allocate: total_step is not set; set it to the number of optimizer steps");
  }
  return allocator_->update_and_allocate(config_, step);
}

void PeftModel::train(bool on) {
  training_ = on;
  base_->train(on);
  for (auto& m : modules_) m.adapter->training = on;
}

void PeftModel::merge(bool safe) {
  for (auto& m : modules_) m.linear->merge(safe);
}

void PeftModel::unmerge() {
  for (auto& m : modules_) m.linear->unmerge();
}

std::shared_ptr<Model> PeftModel::merge_and_unload() {
  merge(true);
  for (auto& m : modules_) {
    m.linear->adapter = nullptr;
    m.linear->merged = false;
  }
  modules_.clear();
  allocator_.reset();
  return base_;
}

int64_t PeftModel::total_parameters() const {
  int64_t n = 0;
  for (auto& p : base_->parameters()) n += p.numel();
  for (auto& m : modules_)
    for (auto& [name, t] : m.adapter->parameters()) n += t->numel();
  return n;
}

}  // namespace peft
