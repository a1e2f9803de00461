// gendertool serial protocol v2, device side. See protocol.h and docs/protocol.md.
#include "protocol.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace gt {

namespace {

uint32_t crc_table_entry(uint32_t i) {
  uint32_t c = i;
  for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
  return c;
}

struct CrcTable {
  uint32_t t[256];
  CrcTable() {
    for (uint32_t i = 0; i < 256; ++i) t[i] = crc_table_entry(i);
  }
};

const CrcTable& crc_table() {
  static const CrcTable table;
  return table;
}

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t len) {
  const uint32_t* t = crc_table().t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < len; ++i) crc = t[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

// ---- RecordWriter -------------------------------------------------------------------------

void RecordWriter::begin(const char* type) {
  len_ = 0;
  depth_ = 0;
  overflow_ = false;
  finished_ = false;
  put("@GT ", 4);
  body_start_ = len_;
  put_str(type);
  put(' ');
  put('{');
  depth_ = 1;
  need_comma_[1] = false;
}

void RecordWriter::put(char c) {
  // kMaxRecord bytes before the "\n" finish() appends
  if (len_ >= kMaxRecord) {
    overflow_ = true;
    return;
  }
  buf_[len_++] = c;
}

void RecordWriter::put(const char* s, size_t n) {
  if (len_ + n > kMaxRecord) {
    overflow_ = true;
    return;
  }
  std::memcpy(buf_ + len_, s, n);
  len_ += n;
}

void RecordWriter::put_str(const char* s) { put(s, std::strlen(s)); }

void RecordWriter::put_escaped(const char* s) {
  put('"');
  if (s != nullptr) {
    for (const unsigned char* p = reinterpret_cast<const unsigned char*>(s); *p != 0; ++p) {
      const unsigned char c = *p;
      switch (c) {
        case '"': put("\\\"", 2); break;
        case '\\': put("\\\\", 2); break;
        case '\b': put("\\b", 2); break;
        case '\f': put("\\f", 2); break;
        case '\n': put("\\n", 2); break;
        case '\r': put("\\r", 2); break;
        case '\t': put("\\t", 2); break;
        default:
          // '@' is escaped so the marker "@GT " never appears inside a payload
          if (c < 0x20 || c == '@') {
            const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
            put(u, 6);
          } else {
            put(static_cast<char>(c));
          }
      }
    }
  }
  put('"');
}

void RecordWriter::sep() {
  if (depth_ <= 0 || depth_ >= 8) {
    overflow_ = true;
    return;
  }
  if (need_comma_[depth_]) put(',');
  need_comma_[depth_] = true;
}

void RecordWriter::key(const char* k) {
  sep();
  if (k != nullptr) {
    put_escaped(k);
    put(':');
  }
}

void RecordWriter::raw_int(int64_t v) {
  char tmp[24];
  int n = std::snprintf(tmp, sizeof tmp, "%lld", static_cast<long long>(v));
  put(tmp, static_cast<size_t>(n));
}

void RecordWriter::raw_uint(uint64_t v) {
  char tmp[24];
  int n = std::snprintf(tmp, sizeof tmp, "%llu", static_cast<unsigned long long>(v));
  put(tmp, static_cast<size_t>(n));
}

void RecordWriter::raw_fixed(double v, int decimals) {
  if (!std::isfinite(v)) {
    put("null", 4);
    return;
  }
  char tmp[48];
  int n = std::snprintf(tmp, sizeof tmp, "%.*f", decimals, v);
  if (n < 0 || n >= static_cast<int>(sizeof tmp)) {
    overflow_ = true;  // absurdly large value: refuse rather than truncate
    return;
  }
  put(tmp, static_cast<size_t>(n));
}

void RecordWriter::field_int(const char* k, int64_t v) {
  key(k);
  raw_int(v);
}

void RecordWriter::field_uint(const char* k, uint64_t v) {
  key(k);
  raw_uint(v);
}

void RecordWriter::field_bool(const char* k, bool v) {
  key(k);
  if (v) {
    put("true", 4);
  } else {
    put("false", 5);
  }
}

void RecordWriter::field_str(const char* k, const char* v) {
  key(k);
  put_escaped(v);
}

void RecordWriter::field_fixed(const char* k, double v, int decimals) {
  key(k);
  raw_fixed(v, decimals);
}

void RecordWriter::field_general(const char* k, double v) {
  key(k);
  if (!std::isfinite(v)) {
    put("null", 4);
    return;
  }
  char tmp[32];
  int n = std::snprintf(tmp, sizeof tmp, "%.9g", v);
  put(tmp, static_cast<size_t>(n));
}

template <typename T, typename PutElem>
void RecordWriter::field_array(const char* k, const T* v, size_t n, PutElem put_elem) {
  key(k);
  put('[');
  for (size_t i = 0; i < n; ++i) {
    if (i) put(',');
    put_elem(v[i]);
  }
  put(']');
}

void RecordWriter::field_int8_array(const char* k, const int8_t* v, size_t n) {
  field_array(k, v, n, [this](int8_t x) { raw_int(x); });
}

void RecordWriter::field_int32_array(const char* k, const int32_t* v, size_t n) {
  field_array(k, v, n, [this](int32_t x) { raw_int(x); });
}

void RecordWriter::field_uint32_array(const char* k, const uint32_t* v, size_t n) {
  field_array(k, v, n, [this](uint32_t x) { raw_uint(x); });
}

void RecordWriter::field_fixed_array(const char* k, const float* v, size_t n, int decimals) {
  field_array(k, v, n, [this, decimals](float x) { raw_fixed(static_cast<double>(x), decimals); });
}

void RecordWriter::field_str_array(const char* k, const char* const* v, size_t n) {
  field_array(k, v, n, [this](const char* x) { put_escaped(x); });
}

void RecordWriter::field_base64(const char* k, const uint8_t* v, size_t n) {
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  key(k);
  put('"');
  for (size_t i = 0; i < n; i += 3) {
    const size_t left = n - i;
    const uint32_t b = (static_cast<uint32_t>(v[i]) << 16) | (left > 1 ? static_cast<uint32_t>(v[i + 1]) << 8 : 0u) |
                       (left > 2 ? static_cast<uint32_t>(v[i + 2]) : 0u);
    const char quad[4] = {kB64[(b >> 18) & 63], kB64[(b >> 12) & 63], left > 1 ? kB64[(b >> 6) & 63] : '=',
                          left > 2 ? kB64[b & 63] : '='};
    put(quad, 4);
  }
  put('"');
}

void RecordWriter::open_nested(const char* k, char bracket) {
  key(k);
  put(bracket);
  if (++depth_ >= 8) {
    overflow_ = true;
    return;
  }
  need_comma_[depth_] = false;
}

void RecordWriter::close_nested(char bracket) {
  put(bracket);
  --depth_;
}

void RecordWriter::begin_array(const char* k) { open_nested(k, '['); }
void RecordWriter::end_array() { close_nested(']'); }
void RecordWriter::begin_object(const char* k) { open_nested(k, '{'); }
void RecordWriter::end_object() { close_nested('}'); }

bool RecordWriter::finish() {
  if (depth_ != 1) overflow_ = true;
  put('}');
  const size_t body_end = len_;
  put('*');
  if (!overflow_) {
    uint32_t crc = crc32(buf_ + body_start_, body_end - body_start_);
    char hex[8];
    for (int i = 7; i >= 0; --i) {
      hex[i] = kHex[crc & 15];
      crc >>= 4;
    }
    put(hex, 8);
  }
  if (overflow_) {
    len_ = 0;
    buf_[0] = 0;
    finished_ = false;
    return false;
  }
  buf_[len_++] = '\n';  // buf_ has room for "\n" + NUL beyond kMaxRecord
  buf_[len_] = 0;
  depth_ = 0;
  finished_ = true;
  return true;
}

// ---- typed records ----------------------------------------------------------------------

bool write_hello(RecordWriter& w, const HelloInfo& h) {
  w.begin("hello");
  w.field_int("proto", kProtoVersion);
  w.field_str("fw", h.fw);
  w.field_str("board", h.board);
  w.field_str("chip", h.chip);
  w.field_str("model", h.model);
  w.field_str("model_sha256", h.model_sha256);
  w.field_str_array("labels", h.labels, h.num_labels);
  w.field_int32_array("input", h.input_shape, h.input_dims);
  w.field_general("in_scale", h.in_scale);
  w.field_int("in_zp", h.in_zp);
  w.field_general("out_scale", h.out_scale);
  w.field_int("out_zp", h.out_zp);
  w.field_uint("arena_bytes", h.device.arena_bytes);
  w.field_uint("arena_used", h.device.arena_used);
  w.field_str("arena_in", h.device.arena_in);
  w.field_uint("heap_internal", h.device.heap_internal);
  w.field_uint("heap_psram", h.device.heap_psram);
  w.field_uint("cpu_mhz", h.device.cpu_mhz);
  w.field_str("idf", h.device.idf);
  w.field_str("tflm", h.tflm);
  w.field_str("esp_nn", h.esp_nn);
  w.field_uint("samples", h.samples);
  w.field_str_array("sample_names", h.sample_names, h.samples);
  w.field_int32_array("sample_truth", h.sample_truth, h.samples);
  w.field_str("source", h.source);
  w.field_bool("running", h.running);
  w.field_bool("camera", h.device.camera_running);
  w.field_uint("tx_dropped", h.device.tx_dropped);
  w.field_bool("simulated", h.simulated);
  return w.finish();
}

bool write_result(RecordWriter& w, const ResultInfo& r) {
  w.begin("result");
  w.field_uint("seq", r.seq);
  w.field_str("source", r.source);
  w.field_int("sample", r.sample);
  w.field_int("class", r.class_index);
  w.field_str("label", r.label);
  w.field_int8_array("scores", r.scores, r.num_classes);
  w.field_fixed_array("probs", r.probs, r.num_classes, 4);
  w.field_uint("pre_us", r.pre_us);
  w.field_uint("invoke_us", r.invoke_us);
  w.field_bool("simulated", r.simulated);
  return w.finish();
}

bool write_bsample(RecordWriter& w, uint32_t first, const uint32_t* pre_us, const uint32_t* invoke_us, size_t n,
                   bool simulated) {
  w.begin("bsample");
  w.field_uint("first", first);
  w.field_uint32_array("pre_us", pre_us, n);
  w.field_uint32_array("invoke_us", invoke_us, n);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_bsummary(RecordWriter& w, const BenchSummaryInfo& s) {
  w.begin("bsummary");
  w.field_uint("n", s.n);
  w.field_uint("warmup", s.warmup);
  w.field_uint("min_us", s.min_us);
  w.field_uint("max_us", s.max_us);
  w.field_fixed("mean_us", s.mean_us, 1);
  w.field_uint("total_us", s.total_us);
  w.field_str("arena_in", s.arena_in);
  w.field_bool("camera", s.camera_running);
  w.field_uint("tx_dropped", s.tx_dropped);
  w.field_bool("simulated", s.simulated);
  return w.finish();
}

bool write_profile(RecordWriter& w, uint32_t node, const char* op, uint32_t us, bool estimated, bool simulated) {
  w.begin("profile");
  w.field_uint("node", node);
  w.field_str("op", op);
  w.field_uint("us", us);
  w.field_bool("estimated", estimated);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_psummary(RecordWriter& w, uint32_t nodes, uint64_t total_us, uint32_t invoke_us, bool estimated,
                    bool simulated) {
  w.begin("psummary");
  w.field_uint("nodes", nodes);
  w.field_uint("total_us", total_us);
  w.field_uint("invoke_us", invoke_us);
  w.field_bool("estimated", estimated);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_selftest(RecordWriter& w, bool pass, uint32_t n, uint32_t failed, const SelftestEntry* results,
                    size_t num_results, bool simulated) {
  if (num_results > kSelftestMaxResults) num_results = kSelftestMaxResults;
  w.begin("selftest");
  w.field_bool("pass", pass);
  w.field_uint("n", n);
  w.field_uint("failed", failed);
  w.begin_array("results");
  for (size_t i = 0; i < num_results; ++i) {
    const SelftestEntry& e = results[i];
    w.begin_object(nullptr);
    w.field_int("sample", e.sample);
    w.field_int("expect", e.expect);
    w.field_int("got", e.got);
    w.field_int("diff", e.diff);
    w.field_bool("ok", e.ok);
    w.end_object();
  }
  w.end_array();
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_error(RecordWriter& w, const char* code, const char* cmd, const char* message, bool simulated) {
  w.begin("error");
  w.field_str("code", code);
  w.field_str("cmd", cmd);
  w.field_str("message", message);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_ack(RecordWriter& w, const char* cmd, bool simulated) {
  w.begin("ack");
  w.field_str("cmd", cmd);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_progress(RecordWriter& w, const char* cmd, uint32_t done, uint32_t total, bool simulated) {
  w.begin("progress");
  w.field_str("cmd", cmd);
  w.field_uint("done", done);
  w.field_uint("total", total);
  w.field_bool("simulated", simulated);
  return w.finish();
}

bool write_input(RecordWriter& w, uint32_t seq, uint32_t offset, uint32_t total, const int8_t* data, size_t n,
                 bool simulated) {
  w.begin("input");
  w.field_uint("seq", seq);
  w.field_uint("offset", offset);
  w.field_uint("total", total);
  w.field_base64("data", reinterpret_cast<const uint8_t*>(data), n);
  w.field_bool("simulated", simulated);
  return w.finish();
}

// ---- commands -----------------------------------------------------------------------------

const char* cmd_name(Cmd c) {
  switch (c) {
    case Cmd::kPing: return "ping";
    case Cmd::kInfo: return "info";
    case Cmd::kSource: return "source";
    case Cmd::kStart: return "start";
    case Cmd::kStop: return "stop";
    case Cmd::kInfer: return "infer";
    case Cmd::kBench: return "bench";
    case Cmd::kProfile: return "profile";
    case Cmd::kSelftest: return "selftest";
    case Cmd::kReset: return "reset";
    case Cmd::kInput: return "input";
    case Cmd::kPanic: return "panic";
    case Cmd::kNone: break;
  }
  return "";
}

const char* source_name(Source s) {
  switch (s) {
    case Source::kSample: return "sample";
    case Source::kUpload: return "upload";
    case Source::kCamera: return "camera";
  }
  return "";
}

namespace {

struct Word {
  const char* p;
  size_t n;
  bool is(const char* s) const { return std::strlen(s) == n && std::memcmp(p, s, n) == 0; }
};

constexpr size_t kMaxWords = 6;

// Decimal, no sign, 1..10 digits, <= UINT32_MAX.
bool parse_u32(const Word& w, uint32_t* out) {
  if (w.n == 0 || w.n > 10) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < w.n; ++i) {
    if (w.p[i] < '0' || w.p[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(w.p[i] - '0');
  }
  if (v > 0xFFFFFFFFull) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

bool parse_hex8(const Word& w, uint32_t* out) {
  if (w.n != 8) return false;
  uint32_t v = 0;
  for (size_t i = 0; i < 8; ++i) {
    const char c = w.p[i];
    uint32_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return false;
    }
    v = (v << 4) | d;
  }
  *out = v;
  return true;
}

}  // namespace

bool parse_command(const char* line, size_t len, Command* out) {
  *out = Command();
  if (len > 0 && line[len - 1] == '\r') --len;
  Word words[kMaxWords];
  size_t nw = 0;
  size_t extra = 0;  // words beyond kMaxWords: only their presence matters
  for (size_t i = 0; i < len;) {
    while (i < len && line[i] == ' ') ++i;
    if (i >= len) break;
    size_t j = i;
    while (j < len && line[j] != ' ') ++j;
    if (nw < kMaxWords) {
      words[nw++] = Word{line + i, j - i};
    } else {
      ++extra;
    }
    i = j;
  }
  if (nw == 0) return false;
  const size_t wl = words[0].n < 16 ? words[0].n : 16;
  for (size_t i = 0; i < wl; ++i) {
    // printable ASCII only, so an error record echoing the word is always valid UTF-8
    const unsigned char c = static_cast<unsigned char>(words[0].p[i]);
    out->word[i] = (c > 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  out->word[wl] = 0;
  const size_t nargs = nw - 1 + extra;

  static const Cmd kNoArg[] = {Cmd::kPing, Cmd::kStart, Cmd::kStop, Cmd::kProfile, Cmd::kSelftest, Cmd::kReset,
                               Cmd::kPanic};
  for (Cmd c : kNoArg) {
    if (words[0].is(cmd_name(c))) {
      out->cmd = c;
      if (nargs != 0) out->error = "bad_args";
      return true;
    }
  }
  if (words[0].is("info")) {  // `info` or `info <proto>` (the host's version, checked when handled)
    out->cmd = Cmd::kInfo;
    if (nargs > 1 || (nargs == 1 && (!parse_u32(words[1], &out->proto) || out->proto == 0))) out->error = "bad_args";
    return true;
  }
  if (words[0].is("input")) {  // `input once` or `input <n>`, 0 <= n <= kInputEveryMax
    out->cmd = Cmd::kInput;
    if (nargs != 1) {
      out->error = "bad_args";
    } else if (words[1].is("once")) {
      out->once = true;
    } else if (!parse_u32(words[1], &out->every) || out->every > kInputEveryMax) {
      out->error = "bad_args";
    }
    return true;
  }
  if (words[0].is("source")) {
    out->cmd = Cmd::kSource;
    if (nargs != 1) {
      out->error = "bad_args";
    } else if (words[1].is("sample")) {
      out->source = Source::kSample;
    } else if (words[1].is("upload")) {
      out->source = Source::kUpload;
    } else if (words[1].is("camera")) {
      out->source = Source::kCamera;
    } else {
      out->error = "bad_args";
    }
    return true;
  }
  if (words[0].is("bench")) {
    out->cmd = Cmd::kBench;
    if (nargs != 2 || !parse_u32(words[1], &out->n) || !parse_u32(words[2], &out->warmup) || out->n < 1 ||
        out->n > kBenchMaxN || out->warmup > kBenchMaxWarmup) {
      out->error = "bad_args";
    }
    return true;
  }
  if (words[0].is("infer")) {
    out->cmd = Cmd::kInfer;
    if (nargs != 4 || !parse_u32(words[1], &out->w) || !parse_u32(words[2], &out->h) ||
        !parse_u32(words[3], &out->len) || !parse_hex8(words[4], &out->crc) || out->w == 0 || out->h == 0) {
      out->error = "bad_args";
    } else if (out->w > kMaxUploadSide || out->h > kMaxUploadSide) {
      out->error = "too_large";
    } else if (static_cast<uint64_t>(out->len) != static_cast<uint64_t>(out->w) * out->h * 3u) {
      out->error = "bad_args";
    }
    return true;
  }
  out->cmd = Cmd::kNone;
  out->error = "unknown_cmd";
  return true;
}

bool LineReader::push(char c) {
  if (ready_) {  // previous line not taken: start over
    len_ = 0;
    too_long_ = false;
    ready_ = false;
  }
  if (c == '\n') {
    if (len_ > 0 && buf_[len_ - 1] == '\r') --len_;  // a trailing "\r" does not count
    if (len_ > kMaxCommand) too_long_ = true;
    if (too_long_) len_ = 0;
    buf_[len_] = 0;
    ready_ = true;
    return true;
  }
  if (too_long_) return false;
  if (len_ >= kMaxCommand + 1) {  // one spare byte for a trailing "\r"
    too_long_ = true;
    len_ = 0;
    return false;
  }
  buf_[len_++] = c;
  return false;
}

bool LineReader::take(Command* out) {
  bool result;
  if (too_long_) {
    *out = Command();
    out->error = "line_too_long";
    result = true;
  } else {
    result = parse_command(buf_, len_, out);
  }
  len_ = 0;
  too_long_ = false;
  ready_ = false;
  buf_[0] = 0;
  return result;
}

// ---- upload -----------------------------------------------------------------------------

void UploadReceiver::begin(uint8_t* buffer, uint32_t len, uint32_t expected_crc) {
  buf_ = buffer;
  len_ = len;
  received_ = 0;
  expected_crc_ = expected_crc;
  crc_ = 0;
  active_ = true;
}

size_t UploadReceiver::feed(const uint8_t* data, size_t n) {
  if (!active_) return 0;
  const size_t want = len_ - received_;
  const size_t take = n < want ? n : want;
  if (take == 0) return 0;
  std::memcpy(buf_ + received_, data, take);
  crc_ = crc32_update(crc_, data, take);
  received_ += static_cast<uint32_t>(take);
  return take;
}

}  // namespace gt
