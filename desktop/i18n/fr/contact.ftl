# La page d'un contact : ses appareils, le numéro de sécurité, son code QR, la vérification.

contact-title = { $contact }
contact-loading = Calcul du numéro de sécurité…
contact-safety-heading = Numéro de sécurité
contact-devices-heading = Ses appareils
contact-device = Appareil { $key }
contact-safety-number-label = Numéro de sécurité partagé avec { $contact }
contact-qr-label = Code QR du numéro de sécurité partagé avec { $contact }
contact-compare-explained = Comparez ce numéro avec celui que { $contact } voit sur son propre écran, en personne ou au cours d'un appel où vous reconnaissez sa voix : s'ils sont identiques, personne d'autre ne peut lire vos échanges.
contact-status-verified = Vérifié
contact-status-verified-detail = Vous avez comparé ce numéro avec { $contact } et ses appareils n'ont pas changé depuis.
contact-status-unverified = Non vérifié
contact-status-unverified-detail = Vous n'avez pas encore comparé ce numéro avec { $contact }.
contact-status-changed = N'est plus vérifié
contact-status-changed-detail = { $contact } a ajouté ou retiré un appareil depuis votre vérification : comparez de nouveau le numéro avant d'échanger des informations sensibles.
contact-mark-verified = Marquer comme vérifié
contact-confirming = Enregistrement…
contact-marked-verified = { $contact } est marqué comme vérifié.
contact-error-no-conversation = Aucune conversation ne vous relie encore à { $contact } : écrivez-lui d'abord, puis revenez sur cette page.
contact-error-changed = Le numéro a changé pendant que vous le compariez : un appareil de { $contact } est arrivé ou parti. Comparez le nouveau numéro ci-dessous.
contact-reload = Recalculer le numéro
contact-field = Contact
contact-field-hint = prenom.nom@ministere.gouv.fr
contact-show = Afficher son numéro
contact-choices = Vos conversations à deux :
contact-choose-hint = Choisissez un contact pour comparer avec lui votre numéro de sécurité.
contact-error-yourself = Un numéro de sécurité se compare avec quelqu'un d'autre : choisissez un contact.
