# Créer un groupe et le gérer : membres et rôles, ajouter, retirer, nommer administrateur, renommer, quitter.

group-create-title = Nouveau groupe
group-name = Nom du groupe
group-members-field = Membres
group-members-hint = Noms d'utilisateur séparés par des virgules ou des espaces, par exemple marie@interieur.gouv.fr
group-create = Créer le groupe
group-created = Le groupe { $name } est créé : il apparaît dans vos conversations.
group-error-name-empty = Donnez un nom au groupe.
group-error-members-empty = Nommez au moins un membre.
group-loading = Chargement des membres…
group-members-heading = Membres
group-role-admin = administrateur
group-role-member = membre
group-member-line = { $user } — { $role } — { $devices ->
    [one] 1 appareil
   *[other] { $devices } appareils
}
group-you = { $user } (vous) — { $role }
group-admin-only = Seuls les administrateurs peuvent retirer un membre, renommer le groupe ou nommer un administrateur. Demandez-le à : { $admins }.
group-remove = Retirer { $user }
group-promote = Nommer { $user } administrateur
group-add-field = Ajouter des membres
group-add = Ajouter
group-rename-field = Nouveau nom du groupe
group-rename = Renommer
group-leave = Quitter le groupe
group-leave-title = Quitter { $name } ?
group-leave-body = Vous ne recevrez plus les messages de ce groupe ; son historique reste sur cet appareil. Pour y revenir, un membre devra vous ajouter de nouveau.
group-leave-confirm = Quitter
group-remove-title = Retirer { $user } de { $name } ?
group-remove-body = Tous ses appareils seront retirés du groupe : { $user } ne recevra plus les nouveaux messages.
group-remove-confirm = Retirer
group-cancel = Annuler
group-working = Envoi de la modification…
group-done-removed = { $user } ne fait plus partie du groupe.
group-done-promoted = { $user } est désormais administrateur.
group-done-renamed = Le groupe s'appelle désormais { $name }.
group-done-left = Vous quittez le groupe : ses membres vous en retirent.
group-done-added = Les membres sont ajoutés.
group-error-not-admin = Seul un administrateur du groupe peut faire cela. Demandez-le à l'un d'eux : { $admins }.
group-not-a-group = Cette conversation est une conversation à deux : elle n'a ni membres à gérer ni nom à changer.
group-more-members = Ce groupe compte { $count } membres ; seuls les 500 premiers sont listés ici.
