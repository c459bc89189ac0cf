// Golden replay: the reference loop (micro-batches cycled in order, loss / grad_accum, backward,
// AdamW step, update_and_allocate, zero_grad) and the comparison with what the reference recorded.
#include "peft/train/replay.h"

#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/formats/safetensors.h"

namespace peft {
namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& p) { return read_json_file(p.string(), "a file of a recorded case"); }

at::Tensor to_tensor_2d(const nlohmann::json& rows, const std::string& what) {
  if (!rows.is_array() || rows.empty() || !rows[0].is_array()) throw std::runtime_error(what + ": expected a list of rows");
  int64_t B = rows.size(), T = rows[0].size();
  auto t = at::empty({B, T}, at::kLong);
  auto acc = t.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r) {
    if (static_cast<int64_t>(rows[r].size()) != T) throw std::runtime_error(what + ": rows of different lengths");
    for (int64_t c = 0; c < T; ++c) acc[r][c] = rows[r][c].get<int64_t>();
  }
  return t;
}

at::Tensor to_tensor_1d(const nlohmann::json& v) {
  bool is_float = false;
  for (auto& x : v) is_float = is_float || x.is_number_float();
  if (is_float) {
    std::vector<float> f;
    for (auto& x : v) f.push_back(x.get<float>());
    return at::tensor(f, at::kFloat);
  }
  std::vector<int64_t> ids;
  for (auto& x : v) ids.push_back(x.get<int64_t>());
  return at::tensor(ids, at::kLong);
}

double rel_error(const at::Tensor& ours, const at::Tensor& ref) {
  auto o = ours.to(at::kDouble), r = ref.to(at::kDouble);
  double denom = r.norm().item<double>();
  double num = (o - r).norm().item<double>();
  if (denom == 0) return num;
  return num / denom;
}

}  // namespace

nlohmann::json ReplayReport::to_json() const {
  nlohmann::json j;
  j["steps"] = steps;
  if (has_trace) {
    j["loss_max_rel_err"] = max_loss_rel;
    j["budget_mismatches"] = budget_mismatches;
    if (first_loss_step >= 0) j["first_loss_divergence_step"] = first_loss_step;
    if (first_budget_step >= 0) j["first_budget_mismatch_step"] = first_budget_step;
  }
  j["rank_pattern_mismatches"] = rank_pattern_mismatches;
  if (has_final) {
    if (std::isfinite(max_adapter_rel)) j["adapter_max_rel_err"] = max_adapter_rel;
    else j["adapter_max_rel_err"] = "shape mismatch (a module kept another rank)";
    j["adapter_worst_tensor"] = worst_adapter_tensor;
  }
  if (has_logits) {
    j["logits_max_abs_err"] = max_logits_abs;
    j["logits_compared"] = logits_detail;
  }
  j["ok"] = ok;
  if (!first_failure.empty()) j["first_failure"] = first_failure;
  return j;
}

namespace {

// A golden case's inputs: its data.json (batches, labels, steps, optimizer) and optional trace.json.
struct GoldenCase {
  fs::path dir;
  nlohmann::json data, trace;
  std::vector<at::Tensor> batches, labels;
  int64_t steps = 0, grad_accum = 1;
};

GoldenCase read_case(const std::string& case_dir, const at::Device& device) {
  GoldenCase gc;
  gc.dir = case_dir;
  for (auto* need : {"base", "adapter_init", "data.json"}) {
    if (!fs::exists(gc.dir / need)) throw std::runtime_error(case_dir + ": missing " + need + " (not a golden case directory)");
  }
  gc.data = read_json(gc.dir / "data.json");
  if (fs::exists(gc.dir / "trace.json")) gc.trace = read_json(gc.dir / "trace.json");
  const auto& data = gc.data;
  for (size_t i = 0; i < data.at("batches").size(); ++i)
    gc.batches.push_back(to_tensor_2d(data["batches"][i], "data.json batches[" + std::to_string(i) + "]").to(device));
  if (data.contains("labels") && !data["labels"].is_null())
    for (auto& l : data["labels"]) gc.labels.push_back(to_tensor_1d(l).to(device));
  gc.steps = data.at("steps").get<int64_t>();
  gc.grad_accum = data.value("grad_accum", 1);
  return gc;
}

AdamW::Options optimizer_options(const GoldenCase& gc) {
  const auto& o = gc.data.at("optimizer");
  std::string opt_name = o.value("name", "AdamW");
  if (opt_name != "AdamW")
    throw std::runtime_error(gc.dir.string() + "/data.json: optimizer \"" + opt_name + "\" is not supported (AdamW)");
  AdamW::Options opts;
  opts.lr = o.at("lr").get<double>();
  opts.weight_decay = o.value("weight_decay", 0.01);
  opts.beta1 = o.at("betas")[0].get<double>();
  opts.beta2 = o.at("betas")[1].get<double>();
  opts.eps = o.value("eps", 1e-8);
  return opts;
}

// Reference module order (trace.json "modules") -> our module index.
std::vector<int64_t> reference_module_order(const nlohmann::json& trace, PeftModel& model) {
  std::vector<int64_t> order;
  if (trace.contains("modules") && trace["modules"].is_array()) {
    std::map<std::string, int64_t> ours;
    for (size_t i = 0; i < model.modules().size(); ++i) ours["base_model.model." + model.modules()[i].path] = i;
    for (auto& name : trace["modules"]) {
      auto it = ours.find(name.get<std::string>());
      if (it == ours.end()) throw std::runtime_error("trace.json names module " + name.get<std::string>() + " that the adapter does not have");
      order.push_back(it->second);
    }
  } else {
    for (size_t i = 0; i < model.modules().size(); ++i) order.push_back(i);
  }
  return order;
}

// One optimizer step of the case (grad_accum micro-batches); returns the summed loss.
double train_step(PeftModel& model, AdamW& optimizer, const GoldenCase& gc, int64_t& micro) {
  double loss_sum = 0;
  for (int64_t k = 0; k < gc.grad_accum; ++k, ++micro) {
    Batch b;
    b.input_ids = gc.batches[micro % gc.batches.size()];
    if (!gc.labels.empty()) b.labels = gc.labels[micro % gc.labels.size()];
    else b.labels = b.input_ids;
    auto out = model.forward(b);
    auto loss = out.loss / static_cast<double>(gc.grad_accum);
    loss.backward();
    loss_sum += loss.item<double>();
  }
  optimizer.step();
  return loss_sum;
}

// This step's loss and budget against the reference trace's record `ref`.
void compare_step(ReplayReport& rep, const nlohmann::json& ref, const nlohmann::json& line, bool ada,
                  const ReplayTolerances& tol) {
  const int64_t step = line["step"].get<int64_t>();
  const double loss_sum = line["loss"].get<double>();
  double ref_loss = ref.at("loss").get<double>();
  double rel = std::abs(loss_sum - ref_loss) / std::max(std::abs(ref_loss), 1e-12);
  rep.max_loss_rel = std::max(rep.max_loss_rel, rel);
  if (rel > tol.loss_rel && rep.first_loss_step < 0) {
    rep.first_loss_step = step;
    std::ostringstream os;
    os << "step " << step << ": loss " << loss_sum << " vs reference " << ref_loss << " (rel " << rel << ")";
    if (rep.first_failure.empty()) rep.first_failure = os.str();
  }
  if (ada && ref.contains("budget") && ref["budget"].get<int64_t>() != line["budget"].get<int64_t>()) {
    ++rep.budget_mismatches;
    if (rep.first_budget_step < 0) {
      rep.first_budget_step = step;
      std::ostringstream os;
      os << "step " << step << ": live budget " << line["budget"] << " vs reference " << ref["budget"]
         << " (ranks " << line["ranks"] << " vs " << ref["ranks"] << ")";
      if (rep.first_failure.empty()) rep.first_failure = os.str();
    }
  }
}

void compare_rank_pattern(ReplayReport& rep, const GoldenCase& gc, const AdapterConfig& config) {
  std::map<std::string, std::vector<bool>> ref_pattern;
  const auto& trace = gc.trace;
  if (trace.contains("config") && trace["config"].contains("rank_pattern") && !trace["config"]["rank_pattern"].is_null())
    ref_pattern = trace["config"]["rank_pattern"].get<std::map<std::string, std::vector<bool>>>();
  else if (fs::exists(gc.dir / "adapter_final" / "adapter_config.json"))
    ref_pattern = AdapterConfig::from_file((gc.dir / "adapter_final" / "adapter_config.json").string()).rank_pattern;
  for (auto& [name, keep] : ref_pattern) {
    auto it = config.rank_pattern.find(name);
    if (it == config.rank_pattern.end() || it->second != keep) {
      ++rep.rank_pattern_mismatches;
      if (rep.first_rank_pattern_module.empty()) {
        rep.first_rank_pattern_module = name;
        if (rep.first_failure.empty()) rep.first_failure = "rank_pattern differs first at " + name;
      }
    }
  }
}

void compare_final_adapter(ReplayReport& rep, const GoldenCase& gc, PeftModel& model, const ReplayTolerances& tol) {
  rep.has_final = true;
  auto ref = load_safetensors((gc.dir / "adapter_final" / "adapter_model.safetensors").string());
  auto ours = model.adapter_state_dict();
  for (auto& [key, t] : ref) {
    auto it = ours.find(key);
    if (it == ours.end() || it->second.sizes() != t.sizes()) {
      std::ostringstream os;
      os << "final adapter: " << key << (it == ours.end() ? " missing" : " has another shape") << " in ours";
      if (rep.first_failure.empty()) rep.first_failure = os.str();
      rep.max_adapter_rel = std::numeric_limits<double>::infinity();
      rep.worst_adapter_tensor = key;
      continue;
    }
    if (t.numel() == 0) continue;
    double rel = rel_error(it->second, t);
    if (rel > rep.max_adapter_rel) {
      rep.max_adapter_rel = rel;
      rep.worst_adapter_tensor = key;
    }
  }
  if (rep.max_adapter_rel > tol.adapter_rel && rep.first_failure.empty()) {
    std::ostringstream os;
    os << "final adapter: " << rep.worst_adapter_tensor << " rel err " << rep.max_adapter_rel;
    rep.first_failure = os.str();
  }
}

// Logits for batches[0] in eval mode: the trained model, and base + adapter_final as loaded from
// the reference's files.
void compare_logits(ReplayReport& rep, const GoldenCase& gc, PeftModel& model, const LoadOptions& load,
                    const ReplayTolerances& tol) {
  rep.has_logits = true;
  const fs::path& dir = gc.dir;
  SafeTensorsFile ref((dir / "ref_logits.safetensors").string());
  at::NoGradGuard no_grad;
  Batch b;
  b.input_ids = gc.batches[0];
  std::vector<std::string> compared;
  auto check = [&](const std::string& what, const at::Tensor& ours, const at::Tensor& expected) {
    double d = (ours.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
    compared.push_back(what);
    if (d > rep.max_logits_abs) rep.max_logits_abs = d;
    if (d > tol.logits_abs && rep.first_failure.empty()) {
      std::ostringstream os;
      os << "logits " << what << ": max abs err " << d;
      rep.first_failure = os.str();
    }
  };
  const auto& config = model.config();
  const bool ada = config.peft_type == PeftType::AdaLora;
  if (ref.contains("final")) {
    // The reference's "final" is adapter_final as saved, i.e. sliced to the rank_pattern. When
    // the run ends outside the frozen phase (tfinal 0), E entries pruned by the last mask have
    // been moved off zero again by the optimizer; zero them so the trained model is the one saved.
    if (ada && !config.rank_pattern.empty()) model.allocator()->mask_using_rank_pattern(config.rank_pattern);
    model.train(false);
    check("final(trained)", model.forward(b).logits, ref.tensor("final"));
    if (fs::exists(dir / "adapter_final")) {
      auto fresh = PeftModel::load(load_model((dir / "base").string(), load), (dir / "adapter_final").string());
      fresh->train(false);
      check("final(adapter_final loaded)", fresh->forward(b).logits, ref.tensor("final"));
    }
  }
  if (ref.contains("base")) {
    auto plain = load_model((dir / "base").string(), load);
    plain->eval();
    check("base", plain->forward(b).logits, ref.tensor("base"));
  }
  for (size_t i = 0; i < compared.size(); ++i) rep.logits_detail += (i ? ", " : "") + compared[i];
}

}  // namespace

ReplayReport replay_golden(const std::string& case_dir, const std::function<void(const nlohmann::json&)>& on_step,
                           const ReplayTolerances& tol, const std::string& save_dir, const LoadOptions& load) {
  const GoldenCase gc = read_case(case_dir, load.device);
  auto model = PeftModel::load(load_model((gc.dir / "base").string(), load), (gc.dir / "adapter_init").string());
  auto& config = model->config();
  const bool ada = config.peft_type == PeftType::AdaLora;
  if (ada) config.validate();
  AdamW optimizer(model->params(), optimizer_options(gc));
  const std::vector<int64_t> order = reference_module_order(gc.trace, *model);

  ReplayReport rep;
  rep.steps = gc.steps;
  rep.has_trace = gc.trace.contains("trace");
  model->train(true);
  model->forwards_per_step = gc.grad_accum;
  model->params().zero_grad();
  int64_t micro = 0;
  for (int64_t step = 0; step < gc.steps; ++step) {
    const double loss_sum = train_step(*model, optimizer, gc, micro);
    nlohmann::json line = {{"step", step}, {"loss", loss_sum}};
    if (ada) {
      model->update_and_allocate(step);
      auto live = model->allocator()->live_ranks();
      std::vector<int64_t> ranks;
      int64_t total = 0;
      for (auto i : order) {
        ranks.push_back(live[i]);
        total += live[i];
      }
      line["ranks"] = ranks;
      line["budget"] = total;
    }
    model->params().zero_grad();
    if (on_step) on_step(line);
    if (rep.has_trace && step < static_cast<int64_t>(gc.trace["trace"].size()))
      compare_step(rep, gc.trace["trace"][step], line, ada, tol);
  }

  if (ada) compare_rank_pattern(rep, gc, config);
  if (!save_dir.empty()) model->save(save_dir);
  if (fs::exists(gc.dir / "adapter_final" / "adapter_model.safetensors")) compare_final_adapter(rep, gc, *model, tol);
  if (fs::exists(gc.dir / "ref_logits.safetensors")) compare_logits(rep, gc, *model, load, tol);

  rep.ok = rep.max_loss_rel <= tol.loss_rel && rep.budget_mismatches == 0 && rep.rank_pattern_mismatches == 0 &&
           rep.max_adapter_rel <= tol.adapter_rel && rep.max_logits_abs <= tol.logits_abs;
  return rep;
}

}  // namespace peft
