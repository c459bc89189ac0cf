// GPT-2's byte-level alphabet as a public helper: the spelling byte-level BPE vocabularies use,
// for code that builds such a vocabulary from raw token bytes (a GGUF file's tokens).
#pragma once
#include <string>
#include <string_view>

namespace peft {

// Each byte of `bytes` as its character in the alphabet ("Ġ" for a space), UTF-8 encoded.
std::string byte_level_spelling(std::string_view bytes);
// True when `token` is valid UTF-8 and every character of it is in the alphabet.
bool is_byte_level_spelled(std::string_view token);

}  // namespace peft
