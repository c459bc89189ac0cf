// `peft convert FILE.gguf --tensors OUT.safetensors [--header OUT.json]`: the tensors of a llama.cpp GGUF
// file dequantized to float32 under their GGUF names with PyTorch shapes; its metadata and tensor infos as JSON.
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "peft/core/file_io.h"
#include "peft/core/flags.h"
#include "peft/formats/gguf.h"
#include "peft/formats/safetensors.h"

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

int run_convert(const std::vector<std::string>& argv) {
  std::string input, tensors_out, header_out;
  peft::Flags args(
      "convert", "peft convert FILE.gguf [--tensors OUT.safetensors] [--header OUT.json]",
      "Reads a GGUF file (llama.cpp's model format, versions 2 and 3) and writes every tensor,\n"
      "dequantized to float32, to a safetensors file: under its GGUF name (token_embd.weight,\n"
      "blk.0.attn_q.weight, ...) and with the PyTorch shape, which is ggml's dims reversed. Tensor\n"
      "types read: " + peft::ggml_dequantizable_types() + ".\n"
      "--header writes the file's metadata (architecture, hyper-parameters, tokenizer: each key with\n"
      "its GGUF type and value) and tensor infos (name, type, ggml dims, offset, bytes) as JSON.\n"
      "The whole file is checked in either case; at least one output is needed.",
      "  peft convert SmolLM2-135M-Q8_0.gguf --tensors smollm2-f32.safetensors\n"
      "  peft convert SmolLM2-135M-Q8_0.gguf --header smollm2-header.json");
  args.positional("FILE.gguf", &input);
  args.flag("tensors", "OUT.safetensors", "write every tensor, dequantized to float32, to this safetensors file",
            &tensors_out);
  args.flag("header", "OUT.json", "write the metadata and the tensor infos as JSON to this file", &header_out);
  if (!args.parse(argv)) return 0;
  args.require("FILE.gguf", input);
  if (tensors_out.empty() && header_out.empty())
    throw std::invalid_argument("nothing to write: give --tensors OUT.safetensors, --header OUT.json or both "
                                "(see peft convert --help)");
  if (!tensors_out.empty()) peft::refuse_output_over_inputs("tensors", tensors_out, {{"the GGUF file", input}});
  if (!header_out.empty()) peft::refuse_output_over_inputs("header", header_out, {{"the GGUF file", input}});

  peft::GgufFile gguf(input);
  if (!header_out.empty()) {
    peft::write_text_atomic(header_out, header_json(gguf).dump(1, ' ', false, ordered_json::error_handler_t::replace) + "\n");
    std::cout << "wrote the header of " << input << " (GGUF v" << gguf.version() << ", " << gguf.keys().size()
              << " metadata keys, " << gguf.tensors().size() << " tensors) to " << header_out << "\n";
  }
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

PEFT_COMMAND("convert", "a llama.cpp GGUF file's tensors as float32 safetensors, its header as JSON", run_convert);
