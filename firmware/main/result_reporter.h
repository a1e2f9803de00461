// Result reporter: protocol records (protocol.h's RecordWriter) written as whole lines.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol.h"

namespace gt::report {

// Sends a finished record line; drops (and logs) a record that overflowed.
void Send(RecordWriter& w, bool ok);

void Ack(const char* cmd);
void Error(const char* code, const char* cmd, const char* message);

}  // namespace gt::report
