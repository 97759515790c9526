// llm-client subcommands over the generated llm.v1 and grpc.health.v1 stubs.
#include "client/client_commands.h"

#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "llm/v1/llm.grpc.pb.h"

namespace llm::client {
namespace {

absl::Status FromGrpc(const grpc::Status& status, absl::string_view rpc) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(rpc, ": ", status.error_message()));
}

void SetDeadline(grpc::ClientContext& context, const ClientOptions& options) {
  context.set_deadline(std::chrono::system_clock::now() + options.timeout);
}

v1::SamplingParams SamplingOf(const ClientOptions& options) {
  v1::SamplingParams sampling;
  sampling.set_temperature(options.temperature);
  sampling.set_top_k(options.top_k);
  sampling.set_top_p(options.top_p);
  if (options.seed.has_value()) sampling.set_seed(*options.seed);
  return sampling;
}

std::string FormatToken(const v1::SampledToken& token) {
  std::string text = absl::StrFormat("token %d (logprob %.4f)", token.token_id(), token.logprob());
  if (token.top_logprobs_size() > 0) {
    std::vector<std::string> tops;
    for (const v1::TopLogprob& top : token.top_logprobs()) {
      tops.push_back(absl::StrFormat("%d:%.4f", top.token_id(), top.logprob()));
    }
    absl::StrAppend(&text, " top [", absl::StrJoin(tops, " "), "]");
  }
  return text;
}

absl::Status Require(bool condition, absl::string_view what) {
  return condition ? absl::OkStatus() : absl::InternalError(what);
}

}  // namespace

absl::Status RunHealth(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                       std::ostream& out) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  if (absl::Status status = FromGrpc(stub->Check(&context, request, &response), "Health.Check");
      !status.ok()) {
    return status;
  }
  out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(
        "server health is ",
        grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

absl::Status RunInfo(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                     std::ostream& out) {
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ModelInfo info;
  if (absl::Status status =
          FromGrpc(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info), "GetModelInfo");
      !status.ok()) {
    return status;
  }
  out << info.DebugString();
  return absl::OkStatus();
}

absl::Status RunPrefill(const std::shared_ptr<grpc::Channel>& channel,
                        const ClientOptions& options, std::ostream& out) {
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::PrefillRequest request;
  if (options.text.has_value()) {
    request.set_text(*options.text);
  } else {
    for (int32_t token : options.tokens) request.mutable_tokens()->add_ids(token);
  }
  if (options.sequence_id.has_value()) request.set_sequence_id(*options.sequence_id);
  *request.mutable_sampling() = SamplingOf(options);
  request.set_num_top_logprobs(options.top_logprobs);
  v1::PrefillResponse response;
  if (absl::Status status = FromGrpc(stub->Prefill(&context, request, &response), "Prefill");
      !status.ok()) {
    return status;
  }
  out << absl::StrFormat("sequence %d length %d next %s\n", response.sequence_id(),
                         response.length(), FormatToken(response.next()));
  return absl::OkStatus();
}

absl::Status RunDecode(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                       std::ostream& out) {
  if (!options.sequence_id.has_value()) {
    return absl::InvalidArgumentError("decode needs --sequence_id");
  }
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::DecodeRequest request;
  request.set_sequence_id(*options.sequence_id);
  if (options.token_id.has_value()) request.set_token_id(*options.token_id);
  if (options.top_logprobs > 0) request.set_num_top_logprobs(options.top_logprobs);
  v1::DecodeResponse response;
  if (absl::Status status = FromGrpc(stub->Decode(&context, request, &response), "Decode");
      !status.ok()) {
    return status;
  }
  out << absl::StrFormat("sequence %d length %d next %s\n", response.sequence_id(),
                         response.length(), FormatToken(response.next()));
  return absl::OkStatus();
}

absl::Status RunGenerate(const std::shared_ptr<grpc::Channel>& channel,
                         const ClientOptions& options, std::ostream& out) {
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::GenerateRequest request;
  const bool text_mode = options.text.has_value();
  if (text_mode) {
    request.set_text(*options.text);
  } else {
    for (int32_t token : options.tokens) request.mutable_tokens()->add_ids(token);
  }
  for (const std::string& stop : options.stop_strings) request.add_stop_strings(stop);
  *request.mutable_sampling() = SamplingOf(options);
  request.set_max_tokens(options.max_tokens);
  for (int32_t stop : options.stop_token_ids) request.add_stop_token_ids(stop);
  request.set_ignore_eos(options.ignore_eos);
  request.set_num_top_logprobs(options.top_logprobs);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  // Text mode prints the prompt and then the text as it streams; token mode prints a line per token.
  if (text_mode) out << *options.text << std::flush;
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    if (message.has_token()) {
      if (text_mode) {
        out << message.token().text() << std::flush;
      } else {
        out << absl::StrFormat("[%d] %s\n", message.index(), FormatToken(message.token()))
            << std::flush;
      }
    } else if (message.has_finished()) {
      if (text_mode) out << message.text() << "\n";
      out << absl::StrFormat("finished: %s, prompt %d tokens, completion %d tokens\n",
                             v1::FinishReason_Name(message.finished().reason()),
                             message.finished().prompt_tokens(),
                             message.finished().completion_tokens());
    }
  }
  return FromGrpc(reader->Finish(), "Generate");
}

absl::Status RunTokenize(const std::shared_ptr<grpc::Channel>& channel,
                         const ClientOptions& options, std::ostream& out) {
  if (!options.text.has_value()) return absl::InvalidArgumentError("tokenize needs a text argument");
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::TokenizeRequest request;
  request.set_text(*options.text);
  request.set_add_bos(true);
  v1::TokenizeResponse response;
  if (absl::Status status = FromGrpc(stub->Tokenize(&context, request, &response), "Tokenize");
      !status.ok()) {
    return status;
  }
  out << absl::StrJoin(response.ids(), ",") << "\n";
  return absl::OkStatus();
}

absl::Status RunRelease(const std::shared_ptr<grpc::Channel>& channel,
                        const ClientOptions& options, std::ostream& out) {
  if (!options.sequence_id.has_value()) {
    return absl::InvalidArgumentError("release needs --sequence_id");
  }
  auto stub = v1::LlmService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ReleaseRequest request;
  request.set_sequence_id(*options.sequence_id);
  v1::ReleaseResponse response;
  if (absl::Status status = FromGrpc(stub->Release(&context, request, &response), "Release");
      !status.ok()) {
    return status;
  }
  out << absl::StrFormat("released sequence %d (%d tokens)\n", *options.sequence_id,
                         response.released_tokens());
  return absl::OkStatus();
}

absl::Status RunSmoke(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                      std::ostream& out) {
  std::vector<std::string> failures;
  auto check = [&](absl::string_view name, const std::function<absl::Status()>& body) {
    absl::Status status = body();
    out << (status.ok() ? "PASS " : "FAIL ") << name;
    if (!status.ok()) {
      out << ": " << status;
      failures.push_back(absl::StrCat(name, " (", status.ToString(), ")"));
    }
    out << "\n" << std::flush;
  };
  auto stub = v1::LlmService::NewStub(channel);
  auto context_for = [&](grpc::ClientContext& context) { SetDeadline(context, options); };
  auto expect_code = [](const grpc::Status& status, grpc::StatusCode code) {
    if (status.error_code() == code) return absl::OkStatus();
    return absl::InternalError(absl::StrFormat("expected code %d, got %d: %s", code,
                                               status.error_code(), status.error_message()));
  };

  check("health is SERVING", [&] {
    std::ostringstream ignored;
    return RunHealth(channel, options, ignored);
  });
  v1::ModelInfo info;
  check("GetModelInfo describes a model", [&] {
    grpc::ClientContext context;
    context_for(context);
    if (absl::Status s = FromGrpc(stub->GetModelInfo(&context, {}, &info), "GetModelInfo");
        !s.ok()) {
      return s;
    }
    return Require(info.vocab_size() > 0 && info.num_layers() > 0 && info.kv_num_blocks() > 0 &&
                       info.max_position_embeddings() > 0 && !info.backend().empty(),
                   absl::StrCat("incomplete model info: ", info.ShortDebugString()));
  });
  if (info.vocab_size() <= 0) {
    return absl::UnavailableError(absl::StrCat("smoke test stopped early; failed: ",
                                               absl::StrJoin(failures, "; ")));
  }
  const int32_t vocab = info.vocab_size();
  std::vector<int32_t> prompt = {info.bos_token_id() >= 0 ? info.bos_token_id() : 1};
  for (int32_t i = 0; i < 7; ++i) prompt.push_back((37 * i + 11) % vocab);
  constexpr int32_t kSteps = 6;

  // Greedy Generate, then the same tokens through Prefill + Decode: both APIs must agree.
  std::vector<int32_t> generated;
  check("Generate streams max_tokens greedy tokens then a finish message", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::GenerateRequest request;
    for (int32_t token : prompt) request.mutable_tokens()->add_ids(token);
    request.set_max_tokens(kSteps);
    request.set_ignore_eos(true);
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse message;
    bool finished = false;
    while (reader->Read(&message)) {
      if (message.has_token()) generated.push_back(message.token().token_id());
      if (message.has_finished()) {
        finished = message.finished().reason() == v1::FINISH_REASON_LENGTH &&
                   message.finished().completion_tokens() == kSteps &&
                   message.finished().prompt_tokens() == static_cast<int32_t>(prompt.size());
      }
    }
    if (absl::Status s = FromGrpc(reader->Finish(), "Generate"); !s.ok()) return s;
    if (static_cast<int32_t>(generated.size()) != kSteps) {
      return absl::InternalError(absl::StrFormat("got %d tokens, want %d", generated.size(), kSteps));
    }
    return Require(finished, "the final message lacks FINISH_REASON_LENGTH and the token counts");
  });

  uint64_t sequence_id = 0;
  std::vector<int32_t> stepped;
  check("Prefill + Decode reproduce Generate's greedy tokens", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::PrefillRequest request;
    for (int32_t token : prompt) request.mutable_tokens()->add_ids(token);
    request.set_num_top_logprobs(3);
    v1::PrefillResponse response;
    if (absl::Status s = FromGrpc(stub->Prefill(&context, request, &response), "Prefill");
        !s.ok()) {
      return s;
    }
    sequence_id = response.sequence_id();
    if (response.length() != static_cast<int32_t>(prompt.size())) {
      return absl::InternalError(absl::StrFormat("Prefill length %d, want %d", response.length(),
                                                 prompt.size()));
    }
    if (response.next().top_logprobs_size() != 3) {
      return absl::InternalError("Prefill did not return 3 top logprobs");
    }
    stepped.push_back(response.next().token_id());
    for (int32_t step = 1; step < kSteps; ++step) {
      grpc::ClientContext decode_context;
      context_for(decode_context);
      v1::DecodeRequest decode;
      decode.set_sequence_id(sequence_id);
      v1::DecodeResponse decoded;
      if (absl::Status s = FromGrpc(stub->Decode(&decode_context, decode, &decoded), "Decode");
          !s.ok()) {
        return s;
      }
      if (decoded.length() != static_cast<int32_t>(prompt.size()) + step) {
        return absl::InternalError(absl::StrFormat("Decode length %d, want %d", decoded.length(),
                                                   prompt.size() + step));
      }
      stepped.push_back(decoded.next().token_id());
    }
    return Require(stepped == generated,
                   absl::StrCat("Prefill/Decode tokens [", absl::StrJoin(stepped, ","),
                                "] differ from Generate's [", absl::StrJoin(generated, ","), "]"));
  });

  check("Decode with an explicit token_id appends it", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::DecodeRequest request;
    request.set_sequence_id(sequence_id);
    request.set_token_id(prompt[1]);
    v1::DecodeResponse response;
    if (absl::Status s = FromGrpc(stub->Decode(&context, request, &response), "Decode"); !s.ok()) {
      return s;
    }
    return Require(response.length() == static_cast<int32_t>(prompt.size()) + kSteps,
                   "length did not grow by one");
  });
  check("a token id outside the vocabulary is INVALID_ARGUMENT", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::PrefillRequest request;
    request.mutable_tokens()->add_ids(vocab);
    v1::PrefillResponse response;
    return expect_code(stub->Prefill(&context, request, &response),
                       grpc::StatusCode::INVALID_ARGUMENT);
  });
  check("an empty prompt is INVALID_ARGUMENT", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::PrefillResponse response;
    return expect_code(stub->Prefill(&context, v1::PrefillRequest(), &response),
                       grpc::StatusCode::INVALID_ARGUMENT);
  });
  check("Release frees the sequence", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::ReleaseRequest request;
    request.set_sequence_id(sequence_id);
    v1::ReleaseResponse response;
    if (absl::Status s = FromGrpc(stub->Release(&context, request, &response), "Release");
        !s.ok()) {
      return s;
    }
    return Require(response.released_tokens() == static_cast<int32_t>(prompt.size()) + kSteps,
                   "released token count is wrong");
  });
  check("Decode on a released sequence is NOT_FOUND", [&] {
    grpc::ClientContext context;
    context_for(context);
    v1::DecodeRequest request;
    request.set_sequence_id(sequence_id);
    v1::DecodeResponse response;
    return expect_code(stub->Decode(&context, request, &response), grpc::StatusCode::NOT_FOUND);
  });

  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat(failures.size(), " smoke check(s) failed: ",
                                            absl::StrJoin(failures, "; ")));
  }
  out << "smoke: all checks passed\n";
  return absl::OkStatus();
}

}  // namespace llm::client
