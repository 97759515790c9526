// A child process (llm-server, llm-client, llm-bench) whose stdout and stderr are collected by a
// reader thread, for the process-level tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

extern char** environ;

namespace llm::testing {

class ChildProcess {
 public:
  // `extra_environment` entries ("NAME=value") are added to this process's environment.
  explicit ChildProcess(std::vector<std::string> argv,
                        std::vector<std::string> extra_environment = {}) {
    int pipe_fds[2];
    EXPECT_EQ(pipe(pipe_fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    std::vector<char*> args;
    for (std::string& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    std::vector<char*> env;
    for (char** entry = environ; *entry != nullptr; ++entry) env.push_back(*entry);
    for (std::string& entry : extra_environment) env.push_back(entry.data());
    env.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), env.data()), 0)
        << "could not start " << argv[0];
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    reader_ = std::thread([this, fd = pipe_fds[0]] {
      std::array<char, 4096> buffer;
      ssize_t n;
      while ((n = read(fd, buffer.data(), buffer.size())) > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        output_.append(buffer.data(), n);
      }
      close(fd);
    });
  }
  ~ChildProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (reader_.joinable()) reader_.join();
  }

  pid_t pid() const { return pid_; }
  std::string output() {
    std::lock_guard<std::mutex> lock(mutex_);
    return output_;
  }
  // Waits for `pattern` in the output; returns its first capture group ("" on timeout).
  std::string WaitForOutput(const std::regex& pattern, std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      std::smatch match;
      const std::string text = output();
      if (std::regex_search(text, match, pattern)) return match.size() > 1 ? match[1].str() : "";
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "";
  }
  void Signal(int signal_number) { kill(pid_, signal_number); }
  // Exit code, or 128 + signal.
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    exited_ = true;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // A /proc/<pid>/status field in kB (VmRSS, VmHWM), -1 if unreadable.
  int64_t ProcStatusKb(const std::string& field) const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::mutex mutex_;
  std::string output_;
  std::thread reader_;
};

}  // namespace llm::testing
