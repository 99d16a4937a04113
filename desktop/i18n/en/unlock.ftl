# The unlock screen: this computer's passphrase.

unlock-title = Unlock Relais
unlock-intro = Your messages on this computer are protected. Type your passphrase.
unlock-passphrase-label = Passphrase
unlock-submit = Unlock
unlock-busy = Unlocking…
unlock-retry = Try again
unlock-forgotten = Forgot the passphrase? It cannot be recovered: ask your administrator for a new link to enroll this computer again.
