// `peft convert FILE.gguf DIR`: a llama.cpp GGUF model as a Hugging Face directory; `--tensors` / `--header`:
// its raw tensors dequantized to float32 under their GGUF names, its metadata and tensor infos as JSON.
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "peft/core/file_io.h"
#include "peft/core/flags.h"
#include "peft/formats/gguf.h"
#include "peft/formats/gguf_model.h"
#include "peft/formats/safetensors.h"
#include "peft/models/model_tokenizer.h"

namespace {

using nlohmann::ordered_json;

ordered_json element_json(const peft::GgufValue& v, size_t i) {
  if (v.elem_type == peft::GgufType::BOOL) return v.uints[i] != 0;
  if (!v.uints.empty()) return v.uints[i];
  if (!v.ints.empty()) return v.ints[i];
  if (!v.floats.empty()) return v.floats[i];
  return v.strings[i];
}

// The file's header as JSON: version, alignment, every key with its GGUF type and value, every tensor
// info. Strings that are not UTF-8 have their bad bytes replaced by U+FFFD; NaN and infinities become null.
ordered_json header_json(const peft::GgufFile& f) {
  ordered_json j;
  j["version"] = f.version();
  j["alignment"] = f.alignment();
  j["data_offset"] = f.data_offset();
  ordered_json& metadata = j["metadata"] = ordered_json::object();
  for (const std::string& key : f.keys()) {
    const peft::GgufValue& v = f.value(key);
    ordered_json entry;
    entry["type"] = peft::gguf_type_name(v.type);
    if (v.is_array()) {
      entry["elem_type"] = peft::gguf_type_name(v.elem_type);
      ordered_json values = ordered_json::array();
      for (size_t i = 0; i < v.size(); ++i) values.push_back(element_json(v, i));
      entry["value"] = std::move(values);
    } else {
      entry["value"] = element_json(v, 0);
    }
    metadata[key] = std::move(entry);
  }
  ordered_json& tensors = j["tensors"] = ordered_json::array();
  for (const peft::GgufTensorInfo& t : f.tensors())
    tensors.push_back({{"name", t.name}, {"type", t.type_name()}, {"ne", t.ne}, {"shape", t.torch_shape()},
                       {"offset", t.offset}, {"nbytes", t.nbytes}});
  return j;
}

// DIR as a Hugging Face checkpoint: config.json, model.safetensors (float32) and the tokenizer files.
void write_hf_directory(const peft::GgufFile& gguf, const std::string& dir) {
  namespace fs = std::filesystem;
  nlohmann::ordered_json config = peft::gguf_model_config(gguf);
  std::map<std::string, at::Tensor> tensors = peft::gguf_state_dict(gguf);
  fs::create_directories(dir);
  peft::write_text_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  peft::save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  std::string files = "config.json, model.safetensors";
  for (const std::string& f : peft::write_tokenizer_files(gguf.path(), dir)) files += ", " + f;
  uint64_t parameters = 0;
  for (const auto& [name, t] : tensors) parameters += static_cast<uint64_t>(t.numel());
  std::cout << "wrote " << dir << " (" << config["architectures"][0].get<std::string>() << ", "
            << config["num_hidden_layers"].get<int64_t>() << " layers, " << parameters
            << " parameters in float32): " << files << "\n";
}

int run_convert(const std::vector<std::string>& argv) {
  std::string input, output_dir, tensors_out, header_out;
  peft::Flags args(
      "convert", "peft convert FILE.gguf [DIR] [--tensors OUT.safetensors] [--header OUT.json]",
      "Reads a GGUF file (llama.cpp's model format, versions 2 and 3).\n"
      "DIR: writes the model as a Hugging Face directory that transformers and every peft command\n"
      "load: config.json from the file's metadata, model.safetensors (every weight dequantized to\n"
      "float32, under Hugging Face names, q/k rows back in Hugging Face's rotary order), tokenizer.json\n"
      "and tokenizer_config.json (with the chat template) from its tokenizer.ggml.* metadata, and\n"
      "generation_config.json. Architectures: " + peft::gguf_supported_architectures() + ".\n"
      "(Every command also takes the .gguf file itself as --model.)\n"
      "--tensors writes every tensor, dequantized to float32, to a safetensors file: under its GGUF name (token_embd.weight,\n"
      "blk.0.attn_q.weight, ...) and with the PyTorch shape, which is ggml's dims reversed. Tensor\n"
      "types read: " + peft::ggml_dequantizable_types() + ".\n"
      "--header writes the file's metadata (architecture, hyper-parameters, tokenizer: each key with\n"
      "its GGUF type and value) and tensor infos (name, type, ggml dims, offset, bytes) as JSON.\n"
      "The whole file is checked in every case; at least one output is needed.",
      "  peft convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-instruct/\n"
      "  peft convert SmolLM2-135M-Q8_0.gguf --tensors smollm2-f32.safetensors\n"
      "  peft convert SmolLM2-135M-Q8_0.gguf --header smollm2-header.json");
  args.positional("FILE.gguf", &input);
  args.positional("DIR", &output_dir);
  args.flag("tensors", "OUT.safetensors", "write every tensor, dequantized to float32, to this safetensors file",
            &tensors_out);
  args.flag("header", "OUT.json", "write the metadata and the tensor infos as JSON to this file", &header_out);
  if (!args.parse(argv)) return 0;
  args.require("FILE.gguf", input);
  if (output_dir.empty() && tensors_out.empty() && header_out.empty())
    throw std::invalid_argument("nothing to write: give a directory DIR for the Hugging Face model, --tensors "
                                "OUT.safetensors or --header OUT.json (see peft convert --help)");
  if (!output_dir.empty() && std::filesystem::exists(output_dir) && !std::filesystem::is_directory(output_dir))
    throw std::invalid_argument("DIR " + output_dir + " exists and is not a directory (give a new or existing directory "
                                "for the Hugging Face model)");
  if (!tensors_out.empty()) peft::refuse_output_over_inputs("tensors", tensors_out, {{"the GGUF file", input}});
  if (!header_out.empty()) peft::refuse_output_over_inputs("header", header_out, {{"the GGUF file", input}});

  peft::GgufFile gguf(input);
  if (!header_out.empty()) {
    peft::write_text_atomic(header_out, header_json(gguf).dump(1, ' ', false, ordered_json::error_handler_t::replace) + "\n");
    std::cout << "wrote the header of " << input << " (GGUF v" << gguf.version() << ", " << gguf.keys().size()
              << " metadata keys, " << gguf.tensors().size() << " tensors) to " << header_out << "\n";
  }
  if (!output_dir.empty()) write_hf_directory(gguf, output_dir);
  if (tensors_out.empty()) return 0;

  for (const peft::GgufTensorInfo& info : gguf.tensors()) gguf.readable(info.name);
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, int64_t> by_type;
  uint64_t parameters = 0;
  for (const peft::GgufTensorInfo& info : gguf.tensors()) {
    at::Tensor t;
    try {
      t = at::empty(info.torch_shape(), at::TensorOptions().dtype(at::kFloat));
    } catch (const std::exception& e) {
      throw std::runtime_error("gguf: " + input + ": tensor '" + info.name + "': cannot allocate " +
                               std::to_string(info.numel) + " float32 values: " + e.what());
    }
    gguf.dequantize(info.name, t.data_ptr<float>());
    tensors.emplace(info.name, std::move(t));
    by_type[info.type_name()] += 1;
    parameters += info.numel;
  }
  peft::save_safetensors(tensors_out, tensors);

  std::string types;
  for (const auto& [name, n] : by_type) types += (types.empty() ? "" : ", ") + name + " x" + std::to_string(n);
  std::cout << "wrote " << tensors.size() << " tensors (" << parameters << " parameters; " << (types.empty() ? "none" : types)
            << ") from " << input << " to " << tensors_out << " as float32\n";
  return 0;
}

}  // namespace

PEFT_COMMAND("convert", "a llama.cpp GGUF model as a Hugging Face directory (or its raw tensors, its header)", run_convert);
