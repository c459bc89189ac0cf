// libFuzzer target: a PEFT adapter_config.json through AdapterConfig::from_json, validate, to_json and
// back; errors must be std::invalid_argument, and writing then reading must give the same file.
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/adapter_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::parse_error&) {
    return 0;  // not JSON: read_json_file reports that before the parser sees it
  }
  peft::AdapterConfig c;
  try {
    c = peft::AdapterConfig::from_json(j, "adapter_config.json");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  bool valid = true;
  try {
    c.validate();
  } catch (const std::invalid_argument&) {
    valid = false;
  }
  // What we write, we read back as the same configuration.
  const nlohmann::json written = c.to_json();
  const peft::AdapterConfig again = peft::AdapterConfig::from_json(written, "written adapter_config.json");
  PEFT_FUZZ_CHECK(again.to_json() == written, written.dump());
  if (valid && c.peft_type == peft::PeftType::AdaLora) {
    // The schedule of a valid configuration: from init_r * n down to target_r * n, never outside.
    const int64_t n = 4;
    for (int64_t step : {int64_t{0}, c.tinit, c.tinit + 1, c.total_step / 2, c.total_step - c.tfinal, c.total_step}) {
      const peft::BudgetStep b = peft::budget_schedule(c, n, step);
      PEFT_FUZZ_CHECK(b.budget >= c.target_r * n && b.budget <= c.init_r * n, std::to_string(step));
      (void)peft::schedule_phase(c, step);
    }
  }
  return 0;
}
