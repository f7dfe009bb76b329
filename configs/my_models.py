"""The model functions of configs/custom_model_fedsgd.toml: a custom model is any function in a
module next to the config (or in the working directory, or installed), named ``module:function``.

A function returns ``(keras_model, loss)``, ``(keras_model, loss, metrics)`` or a fedsim model;
the config's ``[model] params`` are its keyword arguments. Build a new Keras model on every call.
"""
import keras


def small_classifier(hidden: int = 32, num_features: int = 60, num_classes: int = 10):
    """One hidden ReLU layer for FedProx's Synthetic data (60 features, 10 classes); logits out."""
    model = keras.Sequential([
        keras.Input((num_features,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(num_classes),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
