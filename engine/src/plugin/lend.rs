//! Lending an operation's transactions to a plugin call.
//!
//! wasmtime wants `'static` store data, but the kernel transaction ([`Tx`]) and the store
//! transaction ([`WriteTxn`]) of an operation are borrowed for that operation only. A
//! [`Lent`] carries such a borrow into the plugin's store for exactly one call: the store is
//! created and dropped inside the function that holds the borrow ([`super::adapters`]), so
//! the pointer never outlives what it points to, and it is only dereferenced from host
//! calls, which run while that function is suspended on the plugin call — never at the same
//! time as the lender's own use.

use std::ptr::NonNull;

use crate::net::Tx;
use crate::store::WriteTxn;

pub struct Lent<T: ?Sized>(Option<NonNull<T>>);

// SAFETY: the lent value is `Send` (Tx and WriteTxn are), and access is exclusive: only the
// store that holds the Lent uses it, through `&mut self`.
unsafe impl<T: ?Sized + Send> Send for Lent<T> {}

impl<T: ?Sized> Lent<T> {
    pub fn none() -> Self {
        Lent(None)
    }

    pub fn get(&mut self) -> Option<&mut T> {
        // SAFETY: see the module comment: the pointee outlives every use, and `&mut self`
        // makes this the only access.
        self.0.map(|p| unsafe { &mut *p.as_ptr() })
    }
}

/// Lend a kernel transaction.
///
/// # Safety
/// The returned value must be dropped before `tx`'s borrow ends: keep it inside a store
/// local to the function that holds the borrow.
pub unsafe fn tx(tx: &mut Tx) -> Lent<Tx> {
    Lent(Some(NonNull::from(tx)))
}

/// Lend a store transaction.
///
/// # Safety
/// As for [`tx`]: drop the returned value before `w`'s borrow ends.
pub unsafe fn store<'a>(w: &'a mut (dyn WriteTxn + 'a)) -> Lent<dyn WriteTxn + 'static> {
    let p: NonNull<dyn WriteTxn + 'a> = NonNull::from(w);
    // Only the trait object's lifetime bound changes.
    Lent(Some(unsafe {
        std::mem::transmute::<NonNull<dyn WriteTxn + 'a>, NonNull<dyn WriteTxn + 'static>>(p)
    }))
}
