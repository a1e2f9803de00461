// The TFLM example shape: setup() once, then loop() forever, from the app task.
#pragma once

void setup();
void loop();
