// app_main starts one task running setup()/loop(), pinned to its own core so a long Invoke()
// never starves the other core's idle task (the task watchdog checks that one only, see
// sdkconfig.defaults).
#include "app_config.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "main_functions.h"

namespace {

void AppTask(void*) {
  setup();
  for (;;) loop();
}

}  // namespace

extern "C" void app_main(void) {
  xTaskCreatePinnedToCore(AppTask, "gendertool", gt::config::kTaskStackBytes, nullptr,
                          gt::config::kTaskPriority, nullptr, gt::config::kTaskCore);
}
