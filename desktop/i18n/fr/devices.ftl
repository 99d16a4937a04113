# La page « Mes appareils » : la liste, la révocation, et relier un nouvel appareil.

devices-title = Mes appareils
devices-loading = Chargement de vos appareils…
devices-refresh = Actualiser la liste
devices-this-device = Cet appareil
devices-device = Appareil { $id }
devices-key = Clé { $key }
devices-enrolled = Inscrit : { $date }
devices-last-seen = Dernière connexion : { $date }
devices-never-seen = Pas connecté depuis son inscription
devices-revoke = Révoquer l'appareil { $id }
devices-revoke-title = Révoquer l'appareil { $id } ?
devices-revoke-body = Il sera déconnecté aussitôt, ne recevra plus aucun message et sera retiré de vos conversations. C'est définitif : pour vous en servir de nouveau, il faudra l'inscrire à nouveau.
devices-revoke-confirm = Révoquer
devices-cancel = Annuler
devices-revoking = Révocation…
devices-revoked = L'appareil { $id } est révoqué.
devices-link = Relier un nouvel appareil
devices-linking = Création du lien…
devices-link-heading = Lien pour votre nouvel appareil
devices-link-explained = Sur le nouvel appareil, ouvrez Relais et scannez ce code ou collez-y le lien. Il recevra ensuite l'historique de vos conversations depuis cet appareil-ci : laissez Relais ouvert ici jusqu'à la fin de la copie.
devices-link-secret = Ce lien est secret et ne sert qu'une fois : ne l'envoyez à personne et ne le collez dans aucune conversation. Quiconque s'en sert devient l'un de vos appareils.
devices-link-qr-label = Code QR du lien pour relier un nouvel appareil
devices-link-field = Lien pour relier un nouvel appareil
devices-link-copy = Copier le lien
devices-link-copied = Lien copié dans le presse-papiers.
devices-link-hide = Masquer le lien
