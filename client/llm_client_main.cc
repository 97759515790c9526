// llm-client: talks to llm-server. `llm-client --help` lists the flags; subcommands:
//   health | info | prefill | decode | generate | release | smoke
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/client_commands.h"
#include "client/secure_channel.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

ABSL_FLAG(std::string, target, "localhost:50051", "Server address host:port.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "Deadline of each RPC.");
ABSL_FLAG(std::string, tokens, "", "Prompt token ids, comma separated (prefill, generate).");
ABSL_FLAG(int64_t, sequence_id, -1, "Sequence to decode/release, or to extend with prefill.");
ABSL_FLAG(int, token_id, -1, "Token to append with decode (default: the last sampled one).");
ABSL_FLAG(int, max_tokens, 16, "generate: most tokens to generate.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature (0 = greedy).");
ABSL_FLAG(int, top_k, 0, "Top-k cut (0 = none).");
ABSL_FLAG(double, top_p, 1.0, "Nucleus mass in (0, 1].");
ABSL_FLAG(int64_t, seed, -1, "Sampling seed (-1 = server's choice).");
ABSL_FLAG(int, top_logprobs, 0, "Also print this many most likely alternatives per token.");
ABSL_FLAG(std::string, stop, "", "generate: stop token ids, comma separated.");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past EOS tokens.");
ABSL_FLAG(std::vector<std::string>, stop_strings, {},
          "generate: stop when the text reaches any of these (comma separated; needs a tokenizer).");

namespace {

bool ParseIds(const std::string& text, std::vector<int32_t>* ids) {
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) return false;
    ids->push_back(id);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists this program's own flags (Abseil's default matches files named like the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "client/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "llm-client [flags] <command> [text]\n"
      "commands: health, info, prefill, decode, generate, tokenize, release, smoke\n"
      "prefill, generate and tokenize take a text prompt as their argument (the server's model\n"
      "needs a tokenizer.model), or token ids through --tokens.\n"
      "examples:\n"
      "  llm-client generate \"The meaning of life is\" --max_tokens=40 --temperature=0.8\n"
      "  llm-client --tokens=1,15,27 --max_tokens=8 generate");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2 && args.size() != 3) {
    std::cerr << "expected a command and at most one text argument; run llm-client --help\n";
    return 2;
  }
  const std::string command = args[1];

  llm::client::ClientOptions options;
  options.timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_timeout));
  if (!ParseIds(absl::GetFlag(FLAGS_tokens), &options.tokens) ||
      !ParseIds(absl::GetFlag(FLAGS_stop), &options.stop_token_ids)) {
    std::cerr << "--tokens and --stop take comma-separated integers\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_sequence_id) >= 0) options.sequence_id = absl::GetFlag(FLAGS_sequence_id);
  if (absl::GetFlag(FLAGS_token_id) >= 0) options.token_id = absl::GetFlag(FLAGS_token_id);
  if (absl::GetFlag(FLAGS_seed) >= 0) options.seed = absl::GetFlag(FLAGS_seed);
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.top_logprobs = absl::GetFlag(FLAGS_top_logprobs);
  options.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  options.stop_strings = absl::GetFlag(FLAGS_stop_strings);
  if (args.size() == 3) options.text = args[2];

  absl::StatusOr<std::shared_ptr<grpc::Channel>> made =
      llm::client::MakeChannelFromFlags(absl::GetFlag(FLAGS_target));
  if (!made.ok()) {
    std::cerr << made.status().message() << "\n";
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = *std::move(made);
  absl::Status status;
  if (command == "health") {
    status = llm::client::RunHealth(channel, options, std::cout);
  } else if (command == "info") {
    status = llm::client::RunInfo(channel, options, std::cout);
  } else if (command == "prefill") {
    status = llm::client::RunPrefill(channel, options, std::cout);
  } else if (command == "decode") {
    status = llm::client::RunDecode(channel, options, std::cout);
  } else if (command == "generate") {
    status = llm::client::RunGenerate(channel, options, std::cout);
  } else if (command == "tokenize") {
    status = llm::client::RunTokenize(channel, options, std::cout);
  } else if (command == "release") {
    status = llm::client::RunRelease(channel, options, std::cout);
  } else if (command == "smoke") {
    status = llm::client::RunSmoke(channel, options, std::cout);
  } else {
    std::cerr << "unknown command '" << command << "'; run llm-client --help\n";
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "llm-client " << command << " failed: " << status << "\n";
    return 1;
  }
  return 0;
}
