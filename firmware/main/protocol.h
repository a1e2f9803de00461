// gendertool serial protocol v2, device side (see docs/protocol.md).
//
// Portable C++17, no ESP-IDF or TFLM includes, so tests compile it on the host with g++
// and check it against tests/vectors. Nothing here allocates or does I/O: the app owns the
// buffers, writes RecordWriter::data() to the console and feeds received bytes in.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt {

constexpr int kProtoVersion = 2;
constexpr size_t kMaxLine = 2048;      // host parser bound (bytes before "\n")
constexpr size_t kMaxRecord = 2046;    // a record line before "\r\n"
constexpr size_t kMaxCommand = 128;    // command line bytes before "\r\n"
constexpr uint32_t kMaxUploadSide = 640;
constexpr uint32_t kBenchMaxN = 10000;
constexpr uint32_t kBenchMaxWarmup = 1000;
constexpr size_t kBenchBatch = 32;     // runs per bsample record
constexpr size_t kSelftestMaxResults = 16;
constexpr uint32_t kUploadIdleMs = 2000;
// During long work (bench, selftest) a `progress` record goes out when nothing was sent for
// this long, so the host's wait between records follows the work, not a fixed worst case.
constexpr int64_t kProgressIntervalUs = 1000000;
constexpr size_t kInputChunk = 1024;         // input tensor bytes per `input` record (base64: 1368 chars)
constexpr uint32_t kInputEveryMax = 1000;    // `input <n>`: the tensor of every nth result

// CRC-32/IEEE (zlib). Chain with crc32_update(previous, ...); start from 0.
uint32_t crc32_update(uint32_t crc, const void* data, size_t len);
inline uint32_t crc32(const void* data, size_t len) { return crc32_update(0, data, len); }

// Builds one record line "@GT <type> <json>*<crc>\n" in a fixed buffer. Keys and values
// are appended in call order; nested arrays/objects via begin_*/end_*. If the line would
// exceed kMaxRecord the writer latches overflow and finish() fails: a record is never
// emitted truncated. About 2 KiB: keep one static instance per task, not on the stack.
class RecordWriter {
 public:
  RecordWriter() { begin("none"); }
  void begin(const char* type);

  // Object members (key + value). Use inside the record object or an object element.
  void field_int(const char* key, int64_t v);
  void field_uint(const char* key, uint64_t v);
  void field_bool(const char* key, bool v);
  void field_str(const char* key, const char* v);           // nullptr writes ""
  void field_fixed(const char* key, double v, int decimals);  // printf("%.<d>f"), NaN/Inf -> null
  void field_general(const char* key, double v);              // printf("%.9g"), NaN/Inf -> null
  void field_int8_array(const char* key, const int8_t* v, size_t n);
  void field_int32_array(const char* key, const int32_t* v, size_t n);
  void field_uint32_array(const char* key, const uint32_t* v, size_t n);
  void field_fixed_array(const char* key, const float* v, size_t n, int decimals);
  void field_str_array(const char* key, const char* const* v, size_t n);
  void field_base64(const char* key, const uint8_t* v, size_t n);  // RFC 4648 with padding, as a string
  void begin_array(const char* key);
  void end_array();
  void begin_object(const char* key);  // key nullptr: an object element inside an array
  void end_object();

  // Closes the payload and frames it. Returns false (and leaves no usable line) on overflow
  // or unbalanced nesting.
  bool finish();
  const char* data() const { return buf_; }
  size_t size() const { return finished_ ? len_ : 0; }
  bool overflowed() const { return overflow_; }

 private:
  void put(char c);
  void put(const char* s, size_t n);
  void put_str(const char* s);
  void put_escaped(const char* s);
  void sep();
  void key(const char* k);
  void raw_int(int64_t v);
  void raw_uint(uint64_t v);
  void raw_fixed(double v, int decimals);
  void open_nested(const char* k, char bracket);  // begin_array / begin_object
  void close_nested(char bracket);
  // "key":[e0,e1,...] with put_elem(v[i]) writing each element; shared by the field_*_array.
  template <typename T, typename PutElem>
  void field_array(const char* k, const T* v, size_t n, PutElem put_elem);

  char buf_[kMaxRecord + 2];  // + "\n" + NUL
  size_t len_ = 0;
  size_t body_start_ = 0;
  int depth_ = 0;
  bool need_comma_[8] = {};
  bool overflow_ = false;
  bool finished_ = false;
};

// ---- typed records (field names and order exactly as docs/protocol.md §1.4) ----------

// The running device's figures in the hello record (the app's Platform::Status() fills it).
struct DeviceStatus {
  uint32_t arena_bytes;
  uint32_t arena_used;
  uint32_t heap_internal;
  uint32_t heap_psram;
  uint32_t cpu_mhz;
  const char* idf;
  const char* arena_in;   // where the tensor arena landed: "internal" or "psram" (hello.arena_in)
  bool camera_running;    // the camera driver is started and capturing (hello.camera)
  uint32_t tx_dropped;    // lines dropped whole since boot because the host did not read (hello.tx_dropped)
};

struct HelloInfo {
  const char* fw;
  const char* board;
  const char* chip;
  const char* model;
  const char* model_sha256;
  const char* const* labels;
  size_t num_labels;
  const int32_t* input_shape;
  size_t input_dims;
  double in_scale;
  int32_t in_zp;
  double out_scale;
  int32_t out_zp;
  DeviceStatus device;  // arena_bytes .. idf in record order; arena_in, camera, tx_dropped where §1.4 puts them
  const char* tflm;
  const char* esp_nn;
  uint32_t samples;
  const char* const* sample_names;  // `samples` entries each
  const int32_t* sample_truth;      // true class of each sample, -1 when unknown
  const char* source;
  bool running;
  bool simulated;
};

struct ResultInfo {
  uint32_t seq;
  const char* source;
  int32_t sample;  // -1 unless source is "sample"
  int32_t class_index;
  const char* label;
  const int8_t* scores;
  const float* probs;
  size_t num_classes;
  uint32_t pre_us;
  uint32_t invoke_us;
  bool simulated;
};

struct BenchSummaryInfo {
  uint32_t n;
  uint32_t warmup;
  uint32_t min_us;
  uint32_t max_us;
  double mean_us;
  uint64_t total_us;
  bool simulated;
  // the conditions the figures were measured under (docs/protocol.md §1.4 bsummary)
  const char* arena_in;
  bool camera_running;
  uint32_t tx_dropped;
};

struct SelftestEntry {
  int32_t sample;
  int32_t expect;
  int32_t got;
  int32_t diff;
  bool ok;
};

// Each returns RecordWriter::finish(); on success the line is w.data()/w.size().
bool write_hello(RecordWriter& w, const HelloInfo& h);
bool write_result(RecordWriter& w, const ResultInfo& r);
// Run k of the batch is (pre_us[k], invoke_us[k]); both arrays hold n entries.
bool write_bsample(RecordWriter& w, uint32_t first, const uint32_t* pre_us, const uint32_t* invoke_us, size_t n,
                   bool simulated);
bool write_bsummary(RecordWriter& w, const BenchSummaryInfo& s);
bool write_profile(RecordWriter& w, uint32_t node, const char* op, uint32_t us, bool estimated, bool simulated);
bool write_psummary(RecordWriter& w, uint32_t nodes, uint64_t total_us, uint32_t invoke_us, bool estimated,
                    bool simulated);
// At most kSelftestMaxResults entries are written; n and failed count all samples.
bool write_selftest(RecordWriter& w, bool pass, uint32_t n, uint32_t failed, const SelftestEntry* results,
                    size_t num_results, bool simulated);
bool write_error(RecordWriter& w, const char* code, const char* cmd, const char* message, bool simulated);
bool write_ack(RecordWriter& w, const char* cmd, bool simulated);
// Long work still going: `done` of `total` steps (warm-up and timed runs for bench).
bool write_progress(RecordWriter& w, const char* cmd, uint32_t done, uint32_t total, bool simulated);
// One piece of the int8 input tensor of result `seq`: bytes [offset, offset + n) of `total`.
bool write_input(RecordWriter& w, uint32_t seq, uint32_t offset, uint32_t total, const int8_t* data, size_t n,
                 bool simulated);

// ---- commands ---------------------------------------------------------------------------

enum class Cmd { kNone, kPing, kInfo, kSource, kStart, kStop, kInfer, kBench, kProfile, kSelftest, kReset, kInput, kPanic };
enum class Source { kSample, kUpload, kCamera };

const char* cmd_name(Cmd c);        // "ping", "infer", ...; "" for kNone
const char* source_name(Source s);  // "sample", "upload", "camera"

struct Command {
  Cmd cmd = Cmd::kNone;
  // nullptr when accepted, else an error code from docs/protocol.md §3 ("bad_args", ...)
  const char* error = nullptr;
  char word[17] = {};  // first word (<= 16 bytes, non-printable-ASCII -> '?'): the error record's "cmd"
  Source source = Source::kSample;
  uint32_t w = 0, h = 0, len = 0, crc = 0;  // infer
  uint32_t n = 0, warmup = 0;               // bench
  uint32_t proto = 0;                       // info <proto>: the host's protocol version (0: not given)
  uint32_t every = 0;                       // input <n>: every nth result's tensor (0: off)
  bool once = false;                        // input once: the next result's tensor
};

// Parses one command line (no "\n"; a trailing "\r" is ignored). Returns false for a blank
// line (nothing to answer); otherwise true with either cmd set or error set.
bool parse_command(const char* line, size_t len, Command* out);

// Assembles command lines byte by byte with a bounded buffer.
class LineReader {
 public:
  // Returns true when a line ended at this byte: then call take(). Lines over kMaxCommand
  // bytes are reported once, with too_long() true and an empty line().
  bool push(char c);
  const char* line() const { return buf_; }
  size_t length() const { return len_; }
  bool too_long() const { return too_long_; }
  // Parses the completed line into *out (same contract as parse_command; a too-long line
  // gives error "line_too_long" with an empty word) and clears the reader.
  bool take(Command* out);

 private:
  char buf_[kMaxCommand + 2] = {};
  size_t len_ = 0;
  bool too_long_ = false;
  bool ready_ = false;
};

// Receives an upload into a caller-owned buffer and checks length + CRC. The caller
// enforces kUploadIdleMs (abort() and answer "upload_timeout").
class UploadReceiver {
 public:
  void begin(uint8_t* buffer, uint32_t len, uint32_t expected_crc);
  // Copies up to the bytes still expected; returns how many of data were used (the rest
  // belongs to the command stream).
  size_t feed(const uint8_t* data, size_t n);
  bool active() const { return active_; }
  bool complete() const { return active_ && received_ == len_; }
  bool crc_ok() const { return complete() && (crc_ == expected_crc_); }
  uint32_t received() const { return received_; }
  uint32_t computed_crc() const { return crc_; }
  void abort() { active_ = false; }
  void finish() { active_ = false; }

 private:
  uint8_t* buf_ = nullptr;
  uint32_t len_ = 0;
  uint32_t received_ = 0;
  uint32_t expected_crc_ = 0;
  uint32_t crc_ = 0;
  bool active_ = false;
};

}  // namespace gt
