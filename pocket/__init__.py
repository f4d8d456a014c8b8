"""The bundled pocket unCLIP model: its synthetic world, pixel oracle, training and evaluation."""
