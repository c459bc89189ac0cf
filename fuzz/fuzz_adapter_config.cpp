// libFuzzer target: a PEFT adapter_config.json through AdapterConfig::from_json, validate, to_json and
// back; errors must be std::invalid_argument, and writing then reading must give the same file.
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/formats/adapter_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // not JSON (or a number like 1e400): read_json_file reports that before the parser sees it
  }
  peft::AdapterConfig c;
  try {
    c = peft::AdapterConfig::from_json(j, "adapter_config.json");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  try {
    c.validate();
  } catch (const std::invalid_argument&) {
  }
  // What we write, we read back as the same configuration.
  const nlohmann::json written = c.to_json();
  const peft::AdapterConfig again = peft::AdapterConfig::from_json(written, "written adapter_config.json");
  PEFT_FUZZ_CHECK(again.to_json() == written, written.dump());
  return 0;
}
