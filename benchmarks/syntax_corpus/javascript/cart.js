// A shopping cart with discounts and a plain-text receipt.
'use strict';

const TAX_RATE = 0.2;

/**
 * Round a price to whole cents.
 * @param {number} value
 */
function roundCents(value) {
  return Math.round(value * 100) / 100;
}

class Cart {
  constructor(currency = 'EUR') {
    this.currency = currency;
    this.lines = new Map();
    this.coupons = [];
  }

  add(sku, price, quantity = 1) {
    const line = this.lines.get(sku) || { sku, price, quantity: 0 };
    line.quantity += quantity;
    this.lines.set(sku, line);
    return this;
  }

  remove(sku, quantity = Infinity) {
    const line = this.lines.get(sku);
    if (!line) {
      return false;
    }
    line.quantity -= quantity;
    if (line.quantity <= 0) {
      this.lines.delete(sku);
    }
    return true;
  }

  subtotal() {
    let total = 0;
    for (const { price, quantity } of this.lines.values()) {
      total += price * quantity;
    }
    return roundCents(total);
  }

  discount() {
    const subtotal = this.subtotal();
    return this.coupons.reduce((sum, coupon) => {
      if (coupon.kind === 'percent') {
        return sum + subtotal * coupon.value / 100;
      }
      return sum + Math.min(coupon.value, subtotal);
    }, 0);
  }

  total() {
    const net = Math.max(0, this.subtotal() - this.discount());
    return roundCents(net * (1 + TAX_RATE));
  }
}

function receipt(cart) {
  const rows = [];
  for (const line of cart.lines.values()) {
    const amount = roundCents(line.price * line.quantity);
    rows.push(`${line.sku.padEnd(12)} ${String(line.quantity).padStart(3)} ${amount.toFixed(2)}`);
  }
  rows.push(`total ${cart.total().toFixed(2)} ${cart.currency}`);
  return rows.join('\n');
}

const applyCoupon = (cart, code) => {
  switch (code) {
    case 'TEN':
      cart.coupons.push({ kind: 'percent', value: 10 });
      break;
    case 'FIVEOFF':
      cart.coupons.push({ kind: 'fixed', value: 5 });
      break;
    default:
      throw new Error(`unknown coupon ${code}`);
  }
  return cart;
};

module.exports = { Cart, receipt, applyCoupon, roundCents };
