"""NumPy references for the algorithms on multinomial logistic regression.

Independent of TensorFlow: softmax cross-entropy gradients by hand, float64.
Parameters are a list ``[kernel (features x classes), bias (classes)]``.
"""
import numpy as np


def loss_and_gradient(params, x, y):
    """Mean softmax cross-entropy over (x, y) and its gradient."""
    kernel, bias = params
    logits = x @ kernel + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(probs[np.arange(n), y]).mean()
    residual = probs
    residual[np.arange(n), y] -= 1.0
    return loss, [x.T @ residual / n, residual.mean(axis=0)]


def batches(x, y, batch_size, epochs):
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]


def local_sgd(params, x, y, batch_size, lr, epochs=1, mu=0.0, offset=None, momentum=None, beta=0.0):
    """Local SGD; ``mu``: proximal term; ``offset``: added to each gradient; ``momentum``: a frozen
    heavy-ball buffer (Mime) applied as ``g + beta * momentum``. Returns (params, steps)."""
    start = [p.copy() for p in params]
    params = [p.copy() for p in params]
    steps = 0
    for xb, yb in batches(x, y, batch_size, epochs):
        _, grad = loss_and_gradient(params, xb, yb)
        grad = [g + mu * (p - s) for g, p, s in zip(grad, params, start)]
        if offset is not None:
            grad = [g + o for g, o in zip(grad, offset)]
        if momentum is not None:
            grad = [g + beta * m for g, m in zip(grad, momentum)]
        params = [p - lr * g for p, g in zip(params, grad)]
        steps += 1
    return params, steps


def weighted_mean(values, weights):
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    return [sum(w * v[k] for w, v in zip(weights, values)) for k in range(len(values[0]))]


def fedavg_round(params, clients, batch_size, lr, epochs_per_client=None, mu=0.0, weighted=True):
    deltas, counts = [], []
    for i, (x, y) in enumerate(clients):
        epochs = 1 if epochs_per_client is None else epochs_per_client[i]
        new, _ = local_sgd(params, x, y, batch_size, lr, epochs, mu=mu)
        deltas.append([n - p for n, p in zip(new, params)])
        counts.append(len(y) if weighted else 1.0)
    return [p + d for p, d in zip(params, weighted_mean(deltas, counts))]
