// libFuzzer target: a PEFT adapter_config.json through AdapterConfig::from_json, validate, to_json and
// back; errors must be std::invalid_argument, and writing then reading must give the same file.
#include <nlohmann/json.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/formats/adapter_config.h"

namespace {

// Known defect, reported, not fixed here: from_json reads integer keys with get<int64_t>, and for a float
// outside int64's range that conversion is undefined behaviour (UBSan: "1e+300 is outside the range of
// representable values of type 'long'"). Such inputs are left out until the reader checks the type.
bool has_float_beyond_int64(const nlohmann::json& j) {
  auto beyond = [](const nlohmann::json& v) { return v.is_number_float() && !(std::fabs(v.get<double>()) < 9.2e18); };
  if (!j.is_object()) return false;
  for (const char* key : {"r", "init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step"})
    if (auto it = j.find(key); it != j.end() && beyond(*it)) return true;
  if (auto it = j.find("rank_pattern"); it != j.end() && it->is_object())
    for (const auto& v : *it)
      if (beyond(v)) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // not JSON (or a number like 1e400): read_json_file reports that before the parser sees it
  }
  if (has_float_beyond_int64(j)) return 0;
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
