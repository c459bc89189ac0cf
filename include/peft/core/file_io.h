// Small file helpers shared by every reader and writer: JSON files read with errors that name the
// file, and text written atomically (temporary file, fsync, rename) so a crash never leaves half a file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace peft {

// Parses the JSON file at `path`. `what` says what the file should be ("a Hugging Face
// config.json"); it appears in the error when the file is missing or is not valid JSON.
nlohmann::json read_json_file(const std::string& path, const std::string& what);

// Writes `text` to `path` through `path.tmp`: the old file stays whole until the new one is on disk.
void write_text_atomic(const std::string& path, const std::string& text);

// Throws std::invalid_argument when `output` (given by --`flag`) is the same file or directory as one
// of `inputs` (what the command reads, each named: {"the adapter", DIR}): no command writes over its
// own input. Paths that do not exist yet are never the same.
void refuse_output_over_inputs(const std::string& flag, const std::string& output,
                               const std::vector<std::pair<std::string, std::string>>& inputs);

// Flushes a file or directory to disk (directories: so that a rename inside them is durable).
void fsync_path(const std::string& path);

}  // namespace peft
