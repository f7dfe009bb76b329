"""A NumPy-only reference for multinomial logistic regression under FedAvg.

Written independently of TensorFlow: softmax cross-entropy gradients by hand,
float64 throughout, so tests compare fedsim against arithmetic it does not share.
"""
import numpy as np


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_gradient(kernel, bias, x, y):
    """Mean softmax cross-entropy over the batch and its gradient w.r.t. (kernel, bias)."""
    probs = softmax(x @ kernel + bias)
    n = len(y)
    loss = -np.log(probs[np.arange(n), y]).mean()
    residual = probs.copy()
    residual[np.arange(n), y] -= 1.0
    return loss, x.T @ residual / n, residual.mean(axis=0)


def local_sgd(kernel, bias, x, y, batch_size, lr, epochs=1, momentum=0.0):
    """Minibatch SGD over the client's data in order; returns the new (kernel, bias)."""
    kernel, bias = kernel.copy(), bias.copy()
    m_k, m_b = np.zeros_like(kernel), np.zeros_like(bias)
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            _, g_k, g_b = loss_and_gradient(kernel, bias, xb, yb)
            if momentum:
                m_k, m_b = momentum * m_k + g_k, momentum * m_b + g_b
                g_k, g_b = m_k, m_b
            kernel, bias = kernel - lr * g_k, bias - lr * g_b
    return kernel, bias


def fedavg_round(kernel, bias, clients, batch_size, lr, weighted=True, server_lr=1.0, momentum=0.0):
    """One FedAvg round over ``clients`` (a list of (x, y)); returns the new (kernel, bias)."""
    deltas, weights = [], []
    for x, y in clients:
        k, b = local_sgd(kernel, bias, x, y, batch_size, lr, momentum=momentum)
        deltas.append((k - kernel, b - bias))
        weights.append(len(y) if weighted else 1.0)
    weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    mean_k = sum(w * d[0] for w, d in zip(weights, deltas))
    mean_b = sum(w * d[1] for w, d in zip(weights, deltas))
    return kernel + server_lr * mean_k, bias + server_lr * mean_b


def make_clients(sizes, num_features=6, num_classes=3, seed=0):
    """Small random classification clients: float32 features, int32 labels."""
    rng = np.random.default_rng(seed)
    clients = []
    for n in sizes:
        x = rng.normal(size=(n, num_features)).astype(np.float32)
        y = rng.integers(0, num_classes, size=n).astype(np.int32)
        clients.append((x, y))
    return clients
