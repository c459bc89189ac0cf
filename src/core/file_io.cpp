// JSON file reading with errors that name the file, and atomic text writes (tmp, fsync, rename).
// Every configuration and state file of the project goes through these.
#include "peft/core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace peft {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open (expected " + what + ")");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": malformed JSON: " + e.what());
  }
  return j;
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp + ": cannot write (" + std::strerror(errno) + "; check that the directory exists and is writable)");
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(tmp + ": write failed (disk full?)");
  }
  fsync_path(tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error(path + ": cannot replace (" + ec.message() + ")");
  }
}

void refuse_output_over_inputs(const std::string& flag, const std::string& output,
                               const std::vector<std::pair<std::string, std::string>>& inputs) {
  namespace fs = std::filesystem;
  for (auto& [what, path] : inputs) {
    std::error_code ec;
    if (!path.empty() && fs::exists(output, ec) && fs::exists(path, ec) && fs::equivalent(output, path, ec)) {
      throw std::invalid_argument("--" + flag + " " + output + " is " + what + " this command reads (" + path +
                                  "); writing there would destroy it: choose another --" + flag);
    }
  }
}

}  // namespace peft
