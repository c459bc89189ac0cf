// The runtime settings: PEFT_NUM_THREADS is obeyed or refused with a message naming it, the check for
// other processes on the cores sees a thread that keeps one core busy, /proc/cpuinfo's fields are read.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <thread>

#include "peft/core/runtime.h"

namespace {

// Sets PEFT_NUM_THREADS for one test and puts the previous value back.
struct ThreadsEnv {
  std::string saved;
  bool had = false;
  explicit ThreadsEnv(const char* value) {
    if (const char* v = std::getenv("PEFT_NUM_THREADS")) saved = v, had = true;
    setenv("PEFT_NUM_THREADS", value, 1);
  }
  ~ThreadsEnv() {
    if (had) setenv("PEFT_NUM_THREADS", saved.c_str(), 1);
    else unsetenv("PEFT_NUM_THREADS");
    peft::init_runtime();
  }
};

}  // namespace

TEST(Runtime, ThreadCountComesFromTheEnvironment) {
  ThreadsEnv env("1");
  EXPECT_EQ(peft::init_runtime(), 1);
}

TEST(Runtime, BadThreadCountIsRefusedByName) {
  for (const char* bad : {"abc", "0", "-2", "2x", ""}) {
    ThreadsEnv env(bad);
    try {
      peft::init_runtime();
      ADD_FAILURE() << "accepted PEFT_NUM_THREADS=" << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("PEFT_NUM_THREADS=\"" + std::string(bad) + "\""), std::string::npos)
          << e.what();
    }
  }
}

TEST(Runtime, BusyCoresSeesASpinningThread) {
  std::atomic<bool> stop{false};
  std::thread spinner([&] {
    volatile unsigned long x = 0;
    while (!stop.load(std::memory_order_relaxed)) x = x + 1;
  });
  const double busy = peft::busy_cores(0.3);
  const std::string note = peft::shared_cores_note(2, 0.3);
  stop = true;
  spinner.join();
  EXPECT_GE(busy, 0.7) << "one thread spinning for the whole measurement";
  EXPECT_NE(note.find("PEFT_NUM_THREADS=1"), std::string::npos) << note;
  EXPECT_EQ(peft::shared_cores_note(1, 0.01), "");  // one thread has no one to wait for
}

// cpuinfo_field against a regular expression over the file: the first "key<tabs> : value" line wins.
TEST(Runtime, CpuinfoFieldReadsTheFirstLineOfItsKey) {
  std::ifstream in("/proc/cpuinfo");  // without the file every field is empty, which the regex agrees with
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string key : {"vendor_id", "flags", "model name"}) {
    std::smatch m;
    const std::regex line("(^|\n)" + key + "[ \t]*: ?([^\n]*)");
    const std::string want = std::regex_search(text, m, line) ? m[2].str() : "";
    EXPECT_EQ(peft::cpuinfo_field(key), want) << key;
  }
  EXPECT_EQ(peft::cpuinfo_field("no such key"), "");
  EXPECT_EQ(peft::cpuinfo_field("flag"), "") << "a prefix of a key is not the key";
}
