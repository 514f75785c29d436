"""TensorRT knowledge shared by the builder (`emo.engine`) and the runtime's tensorrt backend: the two flavours
(`flavours`) and the reading of a plan directory (`plan_dir`). Neither imports the builder, the exporter or a
TensorRT module at import time, so the runtime may use both."""
