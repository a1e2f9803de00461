// The app's Kconfig options (main/Kconfig.projbuild, prefix APP_), mapped once to local names.
#pragma once

#include <cstdint>

#include "protocol.h"
#include "sdkconfig.h"

namespace gt::config {

#if defined(CONFIG_APP_INPUT_CAMERA)
constexpr Source kBootSource = Source::kCamera;
#elif defined(CONFIG_APP_INPUT_UPLOAD)
constexpr Source kBootSource = Source::kUpload;
#else
constexpr Source kBootSource = Source::kSample;
#endif

enum class ArenaPlacement : uint8_t { kAuto, kInternal, kPsram };
#if defined(CONFIG_APP_ARENA_INTERNAL)
constexpr ArenaPlacement kArenaPlacement = ArenaPlacement::kInternal;
#elif defined(CONFIG_APP_ARENA_PSRAM)
constexpr ArenaPlacement kArenaPlacement = ArenaPlacement::kPsram;
#else
constexpr ArenaPlacement kArenaPlacement = ArenaPlacement::kAuto;
#endif

#if defined(CONFIG_APP_MODEL_IN_PSRAM)
constexpr bool kModelInPsram = true;
#else
constexpr bool kModelInPsram = false;
#endif

#if defined(CONFIG_APP_SELFTEST_ON_BOOT)
constexpr bool kSelftestOnBoot = true;
#else
constexpr bool kSelftestOnBoot = false;
#endif

#if defined(CONFIG_APP_AUTOSTART)
constexpr bool kAutostart = true;
#else
constexpr bool kAutostart = false;
#endif

#if defined(CONFIG_APP_PROFILE_ON_BOOT)
constexpr bool kProfileOnBoot = true;
#else
constexpr bool kProfileOnBoot = false;
#endif

constexpr uint32_t kArenaBytes = CONFIG_APP_ARENA_SIZE;
constexpr uint32_t kInferencePeriodMs = CONFIG_APP_INFERENCE_PERIOD_MS;
constexpr int kSelftestTolerance = CONFIG_APP_SELFTEST_TOLERANCE;
constexpr uint32_t kTaskStackBytes = CONFIG_APP_TASK_STACK_SIZE;
constexpr int kTaskPriority = CONFIG_APP_TASK_PRIORITY;
constexpr int kTaskCore = CONFIG_APP_TASK_CORE;
// An sdkconfig saved before APP_TASK_CORE was fixed to 1 may still say 0 (see Kconfig help).
static_assert(kTaskCore == 1, "APP_TASK_CORE must be 1: a benchmark on CPU0 starves its idle task and the task "
                              "watchdog prints into the protocol stream; run `idf.py menuconfig` or delete sdkconfig");
constexpr uint32_t kSerialRxBufferBytes = CONFIG_APP_SERIAL_RX_BUFFER;
constexpr uint32_t kSerialTxBufferBytes = CONFIG_APP_SERIAL_TX_BUFFER;

}  // namespace gt::config
