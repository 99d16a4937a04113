# L'écran de déverrouillage : la phrase de passe de cet ordinateur.

unlock-title = Déverrouiller Relais
unlock-intro = Vos messages sur cet ordinateur sont protégés. Saisissez votre phrase de passe.
unlock-passphrase-label = Phrase de passe
unlock-submit = Déverrouiller
unlock-busy = Déverrouillage…
unlock-retry = Réessayer
unlock-forgotten = Phrase de passe oubliée ? Elle ne peut pas être retrouvée : demandez à votre administrateur un nouveau lien pour inscrire cet ordinateur à nouveau.
