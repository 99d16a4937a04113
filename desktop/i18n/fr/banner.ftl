# Le bandeau « nouvel appareil » d'une conversation, et la confirmation avant d'envoyer.

banner-new-device = { $contact } a un nouvel appareil. Vérifiez son numéro de sécurité.
banner-changed-devices = Les appareils de { $contact } ont changé depuis votre vérification. Vérifiez son numéro de sécurité.
banner-open-contact = Vérifier { $contact }
banner-confirm-title = Envoyer quand même ?
banner-confirm-body = { $count ->
    [one] { $contacts } a changé d'appareils depuis que vous l'avez vérifié : votre message pourrait être lu sur un appareil que vous n'avez pas vérifié.
   *[other] { $contacts } ont changé d'appareils depuis que vous les avez vérifiés : votre message pourrait être lu sur des appareils que vous n'avez pas vérifiés.
}
banner-confirm-send = Envoyer quand même
banner-confirm-cancel = Ne pas envoyer
banner-checking = Vérification des appareils de vos contacts avant l'envoi…
