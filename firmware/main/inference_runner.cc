// See inference_runner.h. The op resolver is generated (op_resolver.h): exactly the model's
// operators, no AllOpsResolver.
#include "inference_runner.h"

#include <cstring>
#include <new>

#include "app_config.h"
#include "arena_setup.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_timer.h"
#include "model_data.h"
#include "model_settings.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace gt {
namespace {

constexpr const char* kTag = "runner";
constexpr int kArenaRetries = 2;  // x1.5 each: up to 2.25x the configured arena

// Records TFLM's per-operator events (the MicroProfilerInterface the interpreter calls
// around each node) in microseconds, only while armed, so normal Invoke()s cost nothing.
class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (!armed_ || count_ >= InferenceRunner::kMaxProfiledOps) return kDropped;
    tags_[count_] = tag;
    start_[count_] = esp_timer_get_time();
    end_[count_] = start_[count_];
    return static_cast<uint32_t>(count_++);
  }
  void EndEvent(uint32_t handle) override {
    if (handle == kDropped || static_cast<int>(handle) >= count_) return;
    end_[handle] = esp_timer_get_time();
  }
  void Arm() {
    count_ = 0;
    armed_ = true;
  }
  int Disarm(OpTiming* ops, int max_ops) {
    armed_ = false;
    const int n = count_ < max_ops ? count_ : max_ops;
    for (int i = 0; i < n; ++i) ops[i] = OpTiming{tags_[i], end_[i] - start_[i]};
    return n;
  }

 private:
  static constexpr uint32_t kDropped = 0xffffffffu;
  bool armed_ = false;
  int count_ = 0;
  const char* tags_[InferenceRunner::kMaxProfiledOps] = {};
  int64_t start_[InferenceRunner::kMaxProfiledOps] = {};
  int64_t end_[InferenceRunner::kMaxProfiledOps] = {};
};

OpResolver g_resolver;
OpProfiler g_profiler;
alignas(tflite::MicroInterpreter) uint8_t g_interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter* g_interpreter = nullptr;
const uint8_t* g_model_bytes = nullptr;

uint8_t* AllocArena(size_t bytes, bool* in_psram) {
  constexpr uint32_t kInternal = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
  constexpr uint32_t kPsram = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
  void* p = nullptr;
  if (config::kArenaPlacement != config::ArenaPlacement::kPsram) {
    p = heap_caps_aligned_alloc(16, bytes, kInternal);
    if (p != nullptr) {
      *in_psram = false;
      return static_cast<uint8_t*>(p);
    }
    if (config::kArenaPlacement == config::ArenaPlacement::kInternal) {
      ESP_LOGE(kTag, "arena: %u bytes of internal RAM not available (largest block %u)",
               static_cast<unsigned>(bytes),
               static_cast<unsigned>(heap_caps_get_largest_free_block(kInternal)));
      return nullptr;
    }
    // "auto": loud, because every latency figure changes with it; hello.arena_in, bench.json,
    // the monitor header and the live view say "psram" too.
    ESP_LOGE(kTag, "ARENA IN PSRAM: %u bytes do not fit in internal RAM (largest block %u); every "
             "Invoke() will be slower. Free internal RAM or set APP_ARENA_INTERNAL to fail instead",
             static_cast<unsigned>(bytes), static_cast<unsigned>(heap_caps_get_largest_free_block(kInternal)));
  }
  p = heap_caps_aligned_alloc(16, bytes, kPsram);
  if (p == nullptr) {
    ESP_LOGE(kTag, "arena: %u bytes of PSRAM not available", static_cast<unsigned>(bytes));
    return nullptr;
  }
  *in_psram = true;
  return static_cast<uint8_t*>(p);
}

// The arena sequence of arena_setup.h with ESP-IDF's heap and TFLM's interpreter.
class EspArenaHost : public ArenaHost {
 public:
  explicit EspArenaHost(const tflite::Model* model) : model_(model) {}
  uint8_t* Alloc(size_t bytes, bool* in_psram) override { return AllocArena(bytes, in_psram); }
  void Free(uint8_t* arena) override { heap_caps_free(arena); }
  bool Build(uint8_t* arena, size_t bytes) override {
    g_interpreter = new (g_interpreter_storage)
        tflite::MicroInterpreter(model_, g_resolver, arena, bytes, nullptr, &g_profiler);
    return g_interpreter->AllocateTensors() == kTfLiteOk;
  }
  // The interpreter holds nothing outside its arena and g_interpreter_storage; it is not
  // destroyed (its destructor calls kernels' free hooks on node data that a failed
  // AllocateTensors may not have initialised), only forgotten before its arena is freed.
  void Teardown() override { g_interpreter = nullptr; }
  void Retrying(size_t failed_bytes, size_t next_bytes) override {
    ESP_LOGW(kTag, "AllocateTensors failed with a %u-byte arena; retrying with %u bytes",
             static_cast<unsigned>(failed_bytes), static_cast<unsigned>(next_bytes));
  }

 private:
  const tflite::Model* model_;
};

}  // namespace

bool InferenceRunner::Setup() {
  g_model_bytes = g_model_data;
  if (config::kModelInPsram) {
    void* copy = heap_caps_aligned_alloc(16, g_model_data_len, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
    if (copy != nullptr) {
      memcpy(copy, g_model_data, g_model_data_len);
      g_model_bytes = static_cast<const uint8_t*>(copy);
      model_in_psram_ = true;
    } else {
      ESP_LOGW(kTag, "model: no PSRAM for a %u-byte copy; running from flash",
               static_cast<unsigned>(g_model_data_len));
    }
  }
  const tflite::Model* model = tflite::GetModel(g_model_bytes);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    ESP_LOGE(kTag, "model schema %u, TFLM expects %d", static_cast<unsigned>(model->version()),
             TFLITE_SCHEMA_VERSION);
    return false;
  }
  if (RegisterOps(g_resolver) != kTfLiteOk) {
    ESP_LOGE(kTag, "op resolver: registering the model's %u operators failed", kNumOps);
    return false;
  }
  // The generated size is the host runtime's figure plus a margin; ESP-NN's kernels also take
  // scratch buffers from the arena (padded inputs for depthwise/conv on the S3) that the host
  // reference kernels do not, so a too-small arena is retried larger before giving up.
  // An sdkconfig kept from an earlier model keeps its APP_ARENA_SIZE (Kconfig defaults never
  // override a saved value), so never go below what this model was measured to need.
  arena_bytes_ = config::kArenaBytes;
  if (arena_bytes_ < kDefaultArenaBytes) {
    ESP_LOGW(kTag, "APP_ARENA_SIZE %u is below this model's generated %u bytes; using %u",
             static_cast<unsigned>(arena_bytes_), kDefaultArenaBytes, kDefaultArenaBytes);
    arena_bytes_ = kDefaultArenaBytes;
  }
  const size_t first_size = arena_bytes_;
  EspArenaHost host(model);
  const ArenaPlan plan = SetupArena(host, first_size, kArenaRetries);
  arena_ = plan.arena;
  arena_bytes_ = plan.bytes;
  arena_in_psram_ = plan.in_psram;
  if (!plan.ok) {
    // nothing is held now: arena_used_bytes() is 0 and hello reports arena_in "none"
    ESP_LOGE(kTag, "AllocateTensors failed even with a %u-byte arena (see the TFLM message above)",
             static_cast<unsigned>(arena_bytes_));
    arena_bytes_ = 0;
    return false;
  }
  if (arena_bytes_ != first_size) {
    ESP_LOGW(kTag, "arena grown to %u bytes (%u used): set APP_ARENA_SIZE to at least %u",
             static_cast<unsigned>(arena_bytes_), static_cast<unsigned>(g_interpreter->arena_used_bytes()),
             static_cast<unsigned>(g_interpreter->arena_used_bytes() + 16));
  }
  TfLiteTensor* in = g_interpreter->input(0);
  TfLiteTensor* out = g_interpreter->output(0);
  if (in->type != kTfLiteInt8 || out->type != kTfLiteInt8 ||
      in->bytes != static_cast<size_t>(kInputBytes) || out->bytes != static_cast<size_t>(kNumClasses)) {
    ESP_LOGE(kTag, "tensors differ from the generated model settings (input %u bytes, output %u)",
             static_cast<unsigned>(in->bytes), static_cast<unsigned>(out->bytes));
    return false;
  }
  input_ = in->data.int8;
  output_ = out->data.int8;
  return true;
}

bool InferenceRunner::Invoke(int64_t* invoke_us) {
  const int64_t t0 = esp_timer_get_time();
  const TfLiteStatus status = g_interpreter->Invoke();
  if (invoke_us != nullptr) *invoke_us = esp_timer_get_time() - t0;
  return status == kTfLiteOk;
}

int InferenceRunner::Profile(OpTiming* ops, int max_ops, int64_t* invoke_us) {
  g_profiler.Arm();
  const bool ok = Invoke(invoke_us);
  const int n = g_profiler.Disarm(ops, max_ops);
  return ok ? n : -1;
}

size_t InferenceRunner::arena_used_bytes() const {
  return g_interpreter != nullptr ? g_interpreter->arena_used_bytes() : 0;
}

size_t InferenceRunner::model_bytes() const { return g_model_data_len; }

}  // namespace gt
