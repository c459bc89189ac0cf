// Unicode helpers for the tokenizer: UTF-8 decoding/encoding, the character classes tokenizers
// uses (Rust's char::is_whitespace, regex \w, punctuation, ...) and GPT-2's byte<->unicode map.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace peft::text {

// Decodes the code point starting at s[i] (s must be valid UTF-8); advances i past it.
char32_t next_char(std::string_view s, size_t& i);
// Length in bytes of the UTF-8 sequence starting with lead byte b (valid UTF-8 assumed).
inline size_t char_len(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }
void append_utf8(std::string& out, char32_t c);
std::string to_utf8(char32_t c);
size_t utf8_len(char32_t c);

// Strict validation (rejects overlong forms, surrogates, code points above U+10FFFF).
bool is_valid_utf8(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Character classes, as the Rust crates tokenizers depends on define them.
bool is_whitespace(char32_t c);          // char::is_whitespace (White_Space property)
bool is_rust_word_char(char32_t c);      // regex crate's \w (Alphabetic, M, Nd, Pc, Join_Control)
bool is_punctuation(char32_t c);         // ASCII punctuation or Unicode P*
bool is_numeric(char32_t c);             // char::is_numeric (Nd, Nl, No)
bool is_combining_mark(char32_t c);      // General_Category M
bool is_mark_nonspacing(char32_t c);     // General_Category Mn
bool is_other(char32_t c);               // unicode_categories' is_other: Cc, Cf or Co
bool is_chinese_char(char32_t c);        // the CJK blocks BERT pads with spaces
// char::to_lowercase (full mapping: U+0130 becomes two characters).
void append_lowercase(std::string& out, char32_t c);

// GPT-2 byte-level alphabet: every byte maps to a printable character.
const std::string& byte_to_unicode(unsigned char b);  // UTF-8 of the mapped character
int unicode_to_byte(char32_t c);                      // -1 when c is not in the alphabet

}  // namespace peft::text
