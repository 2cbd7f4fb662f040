// drsn_classify: classify one window with a drsn-stream artifact from C++ (LibTorch, no Python).
//
//   drsn_classify ARTIFACT.pt SAMPLES.f32 [OFFSET]
//
// SAMPLES.f32 holds raw little-endian float32 samples at the artifact's sample rate (for
// bearing-cwru: drive-end acceleration in g at 12 kHz). The window of `window` samples starting
// at OFFSET (default 0) is normalized as the metadata says and classified. Prints one line:
//   LABEL CONFIDENCE NOISE_INDEX
// See docs/artifact-format.md for the format this program relies on.
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "mini_json.hpp"

namespace {

const char* kMetaKey = "drsn_stream/metadata.json";

// The normalization of drsn_stream/dsp/normalize.py, step by step in the same precisions
// (float64 sums over float32 samples, float32 scaling), so both give the same bits.
void normalize(std::vector<float>& x, const mini_json::Value& spec) {
  const std::string kind = spec.at("kind").string;
  const double n = static_cast<double>(x.size());
  if (kind == "none") return;
  if (kind == "zscore") {
    double sum = 0.0;
    for (float v : x) sum += v;
    const float mean = static_cast<float>(sum / n);
    double ss = 0.0;
    for (float& v : x) {
      v -= mean;
      ss += static_cast<double>(v) * v;
    }
    const float scale = static_cast<float>(1.0 / (std::sqrt(ss / n) + 1e-8));
    for (float& v : x) v *= scale;
    return;
  }
  if (kind == "rms") {
    const mini_json::Value* floor_v = spec.find("floor");
    const double floor = floor_v != nullptr ? floor_v->number : 1e-3;
    double ss = 0.0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const float scale = static_cast<float>(1.0 / std::max(std::sqrt(ss / n), floor));
    for (float& v : x) v *= scale;
    return;
  }
  if (kind == "affine") {
    const float mean = static_cast<float>(spec.at("mean").number);
    const float inv_std = static_cast<float>(1.0 / spec.at("std").number);
    for (float& v : x) v = (v - mean) * inv_std;
    return;
  }
  throw std::runtime_error("unknown normalization kind \"" + kind + "\"");
}

// What the model's first output holds: metadata "outputs.scores" when present ("probs" in every
// shipped model), else what older format-1 files return (ensembles: log-probabilities, single
// networks: logits).
std::string scores_kind(const mini_json::Value& meta) {
  if (const mini_json::Value* out = meta.find("outputs")) {
    if (const mini_json::Value* s = out->find("scores")) return s->string;
  }
  const mini_json::Value* cfg = meta.find("model_config");
  const mini_json::Value* ens = cfg != nullptr ? cfg->find("ensemble") : nullptr;
  return (ens != nullptr && ens->number > 1) ? "log_probs" : "logits";
}

std::vector<float> read_samples(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() % 4 != 0) throw std::runtime_error(path + ": size is not a multiple of 4 (float32)");
  std::vector<float> x(bytes.size() / 4);
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(x.data()));  // little-endian hosts
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " ARTIFACT.pt SAMPLES.f32 [OFFSET]\n";
    return 2;
  }
  try {
    torch::jit::ExtraFilesMap extra{{kMetaKey, ""}};
    torch::jit::Module module = torch::jit::load(argv[1], torch::kCPU, extra);
    module.eval();
    if (extra[kMetaKey].empty()) throw std::runtime_error(std::string(argv[1]) + " carries no " + kMetaKey);
    const mini_json::Value meta = mini_json::parse(extra[kMetaKey]);
    if (meta.at("format").string != "drsn-stream-artifact")
      throw std::runtime_error("not a drsn-stream artifact");
    if (meta.at("format_version").number > 1)
      throw std::runtime_error("artifact format version is newer than this program knows (1)");
    const mini_json::Value& input = meta.at("input");
    const mini_json::Value* inside = input.find("inside_model");
    if (input.at("kind").string != "raw" && !(inside != nullptr && inside->boolean))
      throw std::runtime_error("this program feeds raw samples; the artifact wants " + input.at("kind").string);

    std::vector<std::string> labels;
    for (const auto& v : meta.at("labels").array) labels.push_back(v.string);
    const auto window = static_cast<size_t>(meta.at("window").number);

    std::vector<float> samples = read_samples(argv[2]);
    const size_t offset = argc == 4 ? std::stoul(argv[3]) : 0;
    if (offset + window > samples.size())
      throw std::runtime_error("the file holds " + std::to_string(samples.size()) + " samples; a window needs " +
                               std::to_string(window) + " from offset " + std::to_string(offset));
    std::vector<float> x(samples.begin() + offset, samples.begin() + offset + window);
    normalize(x, meta.at("normalization"));

    torch::NoGradGuard no_grad;
    at::Tensor input_t = torch::from_blob(x.data(), {1, static_cast<int64_t>(window)}, torch::kFloat32).clone();
    torch::jit::IValue out = module.forward({input_t});
    at::Tensor scores;
    double noise = std::nan("");
    if (out.isTuple()) {
      const auto& items = out.toTuple()->elements();
      scores = items.at(0).toTensor();
      if (items.size() > 1 && items[1].isTensor()) noise = items[1].toTensor().flatten()[0].item<double>();
    } else {
      scores = out.toTensor();
    }
    at::Tensor probs = scores_kind(meta) == "probs" ? scores.to(torch::kFloat32)
                                                     : torch::softmax(scores.to(torch::kFloat32), 1);
    if (probs.size(1) != static_cast<int64_t>(labels.size()))
      throw std::runtime_error("the model has " + std::to_string(probs.size(1)) + " outputs but the metadata " +
                               std::to_string(labels.size()) + " labels");
    const int64_t best = probs.argmax(1).item<int64_t>();
    std::printf("%s %.4f %.4f\n", labels[best].c_str(), probs[0][best].item<double>(), noise);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "drsn_classify: " << e.what() << "\n";
    return 1;
  }
}
