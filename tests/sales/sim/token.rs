//! The ERC20 token (TestToken: OpenZeppelin ERC20 plus a public `mint`), reduced to what the
//! Marketplace model needs: balances, allowances, transfer and transferFrom with OpenZeppelin's
//! errors and check order (allowance first, then balance).

use super::fasthash::FastMap;

use codex::market::{Address, U256};

use super::market::Revert;

/// Token balances and allowances.
#[derive(Debug, Clone, Default)]
pub struct Token {
    balances: FastMap<Address, U256>,
    allowances: FastMap<(Address, Address), U256>,
    total_supply: U256,
}

impl Token {
    /// Creates `amount` new tokens for `to`.
    pub fn mint(&mut self, to: Address, amount: U256) {
        *self.balances.entry(to).or_default() += amount;
        self.total_supply += amount;
    }

    /// The balance of `who`.
    pub fn balance_of(&self, who: Address) -> U256 {
        self.balances.get(&who).copied().unwrap_or_default()
    }

    /// All tokens minted so far.
    pub fn total_supply(&self) -> U256 {
        self.total_supply
    }

    /// Sets the amount `spender` may move from `owner`'s balance. `U256::MAX` is unlimited.
    pub fn approve(&mut self, owner: Address, spender: Address, amount: U256) {
        self.allowances.insert((owner, spender), amount);
    }

    /// How much `spender` may still move from `owner`'s balance.
    pub fn allowance(&self, owner: Address, spender: Address) -> U256 {
        self.allowances
            .get(&(owner, spender))
            .copied()
            .unwrap_or_default()
    }

    /// The error `transfer_from` would give, without moving anything.
    pub fn check_transfer_from(
        &self,
        spender: Address,
        from: Address,
        amount: U256,
    ) -> Result<(), Revert> {
        let allowance = self.allowance(from, spender);
        if allowance < amount {
            return Err(Revert::Erc20InsufficientAllowance {
                spender,
                allowance,
                needed: amount,
            });
        }
        self.check_transfer(from, amount)
    }

    /// The error `transfer` would give, without moving anything.
    pub fn check_transfer(&self, from: Address, amount: U256) -> Result<(), Revert> {
        let balance = self.balance_of(from);
        if balance < amount {
            return Err(Revert::Erc20InsufficientBalance {
                sender: from,
                balance,
                needed: amount,
            });
        }
        Ok(())
    }

    /// Moves `amount` from `from` to `to` with `spender`'s allowance (unlimited allowances are
    /// not decreased).
    pub fn transfer_from(
        &mut self,
        spender: Address,
        from: Address,
        to: Address,
        amount: U256,
    ) -> Result<(), Revert> {
        self.check_transfer_from(spender, from, amount)?;
        let allowance = self.allowance(from, spender);
        if allowance != U256::MAX {
            self.allowances.insert((from, spender), allowance - amount);
        }
        self.transfer(from, to, amount)
    }

    /// Moves `amount` from `from` to `to`.
    pub fn transfer(&mut self, from: Address, to: Address, amount: U256) -> Result<(), Revert> {
        self.check_transfer(from, amount)?;
        *self.balances.entry(from).or_default() -= amount;
        *self.balances.entry(to).or_default() += amount;
        Ok(())
    }
}
