/* Dense matrices as arrays of rows. */

function zeros(rows, cols) {
  return Array.from({ length: rows }, () => new Array(cols).fill(0));
}

function identity(n) {
  const m = zeros(n, n);
  for (let i = 0; i < n; i++) {
    m[i][i] = 1;
  }
  return m;
}

function multiply(a, b) {
  if (a[0].length !== b.length) {
    throw new RangeError('shapes do not match');
  }
  const out = zeros(a.length, b[0].length);
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < b[0].length; j++) {
      let sum = 0;
      for (let k = 0; k < b.length; k++) {
        sum += a[i][k] * b[k][j];
      }
      out[i][j] = sum;
    }
  }
  return out;
}

function transpose(m) {
  return m[0].map((_, j) => m.map((row) => row[j]));
}

function determinant(m) {
  const n = m.length;
  if (n === 1) return m[0][0];
  if (n === 2) return m[0][0] * m[1][1] - m[0][1] * m[1][0];
  let det = 0;
  for (let col = 0; col < n; col++) {
    const minor = m.slice(1).map((row) => row.filter((_, j) => j !== col));
    det += (col % 2 === 0 ? 1 : -1) * m[0][col] * determinant(minor);
  }
  return det;
}

function format(m, digits = 2) {
  return m
    .map((row) => row.map((x) => x.toFixed(digits).padStart(8)).join(' '))
    .join('\n');
}

const power = function (m, exponent) {
  let result = identity(m.length);
  let base = m;
  while (exponent > 0) {
    if (exponent & 1) {
      result = multiply(result, base);
    }
    base = multiply(base, base);
    exponent >>= 1;
  }
  return result;
};

module.exports = { zeros, identity, multiply, transpose, determinant, format, power };
