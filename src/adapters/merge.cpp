// `peft merge` in the library: base + adapter merged in float32 and written as a Hugging Face
// checkpoint; modules_to_save weights come from the adapter, config.json records the dtype.
#include "peft/adapters/merge.h"
#include "peft/models/model_tokenizer.h"

#include <filesystem>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"

namespace peft {
namespace fs = std::filesystem;

MergeResult merge_to_checkpoint(const MergeOptions& o) {
  if (o.model_dir.empty()) throw std::invalid_argument("--model is required (the base model directory)");
  if (o.adapter_dir.empty()) throw std::invalid_argument("--adapter is required (a PEFT adapter directory)");
  if (o.output_dir.empty()) throw std::invalid_argument("--output is required (a new directory for the merged model)");
  at::ScalarType dtype;
  if (o.dtype == "float32" || o.dtype == "fp32") dtype = at::kFloat;
  else if (o.dtype == "bfloat16" || o.dtype == "bf16") dtype = at::kBFloat16;
  else throw std::invalid_argument("--dtype: expected float32 or bfloat16, got \"" + o.dtype + "\"");
  refuse_output_over_inputs("output", o.output_dir, {{"the model directory", o.model_dir}, {"the adapter", o.adapter_dir}});

  auto base = load_model(o.model_dir);  // float32: the merge adds small deltas to large weights
  auto peft = PeftModel::load(base, o.adapter_dir);
  MergeResult r;
  r.merged_modules = static_cast<int64_t>(peft->modules().size());
  // modules_to_save names that exist in this model (PEFT's defaults name both "classifier" and "score").
  for (auto& name : peft->config().modules_to_save) {
    for (auto& p : base->named_parameters(true)) {
      const std::string& k = p.key();
      if (k.rfind(name + ".", 0) == 0 || k.find("." + name + ".") != std::string::npos) {
        r.modules_to_save.push_back(name);
        break;
      }
    }
  }
  {
    at::NoGradGuard no_grad;
    for (auto& m : peft->modules()) {
      auto delta = m.adapter->delta_weight();
      if (!at::isfinite(delta).all().item<bool>())
        throw std::runtime_error(o.adapter_dir + ": the adapter of " + m.path +
                                 " has NaN or infinite values; it cannot be merged (use an earlier checkpoint)");
    }
  }
  auto merged = peft->merge_and_unload();
  peft.reset();
  merged->to(dtype);

  fs::path out(o.output_dir);
  fs::create_directories(out);
  save_model(*merged, out.string());
  // config.json: the base's, with the dtype of the weights we wrote.
  auto config = merged->config().raw;
  std::string name = dtype == at::kFloat ? "float32" : "bfloat16";
  if (config.contains("torch_dtype") || !config.contains("dtype")) config["torch_dtype"] = name;
  if (config.contains("dtype")) config["dtype"] = name;
  write_text_atomic((out / "config.json").string(), config.dump(2) + "\n");
  r.tensors = static_cast<int64_t>(merged->state_dict_tensors().size());

  r.copied_files = write_tokenizer_files(o.model_dir, out.string());
  return r;
}

}  // namespace peft
